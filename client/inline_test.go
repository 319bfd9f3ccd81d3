package client

import (
	"context"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/cohortfl/cohort/model"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
)

// TestFetchModelInTask: a model that came in its task (ModelData) is read
// from there without a coordinator to call, and checked as a download
// is: its size and SHA-256 against the task's.
func TestFetchModelInTask(t *testing.T) {
	w := &model.Weights{Tensors: []model.Tensor{{Name: "w", Shape: []int{2, 3}, Data: []float32{1, 2, 3, 4, 5, 6}}}}
	enc, err := model.MarshalSafetensors(w, nil)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(enc)
	flipped := append([]byte(nil), enc...)
	flipped[len(flipped)-1] ^= 1
	tests := []struct {
		name string
		data []byte
		size int64
		want error // nil: the weights
	}{
		{"as sent", enc, int64(len(enc)), nil},
		{"a byte changed", flipped, int64(len(enc)), model.ErrChecksum},
		{"fewer bytes than announced", enc, int64(len(enc)) + 4, model.ErrTruncated},
		{"more bytes than announced", enc, int64(len(enc)) - 4, model.ErrOverflow},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			task := &pb.Task{TaskId: "t", ModelId: "m", ModelSha256: sum[:], ModelSize: tt.size, ModelData: tt.data}
			got, err := fetchModel(context.Background(), nil, task) // nil: no FetchModel call
			if tt.want != nil {
				if !errors.Is(err, tt.want) {
					t.Fatalf("fetchModel = %v, want %v", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Tensors) != 1 || got.Tensors[0].Name != "w" || got.Tensors[0].Data[5] != 6 {
				t.Fatalf("fetchModel = %+v, want the task's weights", got.Tensors)
			}
		})
	}
}
