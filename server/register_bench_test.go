package server

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/cohortfl/cohort/model"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/tracking"
)

// BenchmarkRegisterModel measures what register: adds to a job for a 100 MB
// model (25M float32 parameters): encoding it, logging it with its MLmodel
// on the arm run and registering the version, in a SQLite store. The
// baseline, in the same run, streams the same 100 MB into a file and syncs
// it, as the artifact store does: the difference is what the registry adds.
//
//	go test ./server/ -run '^$' -bench RegisterModel -benchtime 3x
func BenchmarkRegisterModel(b *testing.B) {
	const params = 25_000_000
	ctx := context.Background()
	dir := b.TempDir()
	store, err := tracking.OpenSQLite(ctx, filepath.Join(dir, "cohort.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	w := &model.Weights{Tensors: []model.Tensor{{Name: "w", Shape: []int{params}, Data: make([]float32, params)}}}
	for i := range w.Tensors[0].Data {
		w.Tensors[0].Data[i] = float32(i%1000) / 1000
	}
	spec := &pb.ModelSpec{Kind: "mlp", Hidden: []int32{200}, InputShape: []int32{784}, Classes: 10}
	b.Run("register", func(b *testing.B) {
		b.SetBytes(params * 4)
		for b.Loop() {
			run, err := store.CreateRun(ctx, tracking.CreateRun{Name: "arm"})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := registerModel(ctx, store, store, modelCard{
				Name: "bench", RunID: run.Info.RunID, ArtifactURI: run.Info.ArtifactURI, Spec: spec, Weights: w,
				Tags: map[string]string{TagVersionArm: "arm"},
			}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("baseline-write-file", func(b *testing.B) {
		b.SetBytes(params * 4)
		for b.Loop() {
			f, err := os.Create(filepath.Join(dir, "baseline.safetensors"))
			if err != nil {
				b.Fatal(err)
			}
			if err := model.EncodeSafetensors(f, w, nil); err != nil {
				b.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				b.Fatal(err)
			}
			f.Close()
		}
	})
}
