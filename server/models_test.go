package server

import (
	"bytes"
	"testing"

	"github.com/cohortfl/cohort/model"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
)

// TestTaskModelInline: a model of at most inlineModelBytes, in memory or
// in the blob store, goes in its tasks as its encoding, the bytes whose
// SHA-256 is its id; a larger one is left to FetchModel.
func TestTaskModelInline(t *testing.T) {
	weights := func(n int) *model.Weights {
		w := &model.Weights{Tensors: []model.Tensor{{Name: "w", Shape: []int{n}, Data: make([]float32, n)}}}
		for i := range w.Tensors[0].Data {
			w.Tensors[0].Data[i] = float32(i)
		}
		return w
	}
	tests := []struct {
		name   string
		n      int // values
		onDisk bool
		inline bool
	}{
		{"small, in memory", 100, false, true},
		{"small, in the blob store", 100, true, true},
		{"just under the limit", inlineModelBytes/4 - 40, false, true},
		{"past the limit, in memory", inlineModelBytes / 4, false, false},
		{"past the limit, in the blob store", inlineModelBytes / 4, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := weights(tt.n)
			enc, err := model.MarshalSafetensors(w, nil)
			if err != nil {
				t.Fatal(err)
			}
			s := newModelStore()
			var m *storedModel
			if tt.onDisk {
				m = s.putFile(globalOnDisk(t, w))
			} else if m, err = s.put(w); err != nil {
				t.Fatal(err)
			}
			defer s.release(m)
			var task pb.Task
			m.taskModel(&task)
			if task.ModelId != m.id || task.ModelSize != int64(len(enc)) || !bytes.Equal(task.ModelSha256, m.sum[:]) {
				t.Fatalf("task model %q, %d bytes, sum %x; want %q, %d, %x", task.ModelId, task.ModelSize, task.ModelSha256, m.id, len(enc), m.sum)
			}
			if tt.inline != (len(task.ModelData) > 0) {
				t.Fatalf("%d-byte model: %d bytes in the task, want inline %v (limit %d)", len(enc), len(task.ModelData), tt.inline, inlineModelBytes)
			}
			if tt.inline && !bytes.Equal(task.ModelData, enc) {
				t.Fatal("the task's model_data is not the model's encoding")
			}
			// FetchModel's bytes are the same, from the inline copy or not.
			var got bytes.Buffer
			if err := m.encode(&got); err != nil || !bytes.Equal(got.Bytes(), enc) {
				t.Fatalf("encode = %d bytes, %v; want the model's %d", got.Len(), err, len(enc))
			}
		})
	}
}
