package aggregators

import (
	"testing"

	"github.com/cohortfl/cohort/model"
)

const benchParams, benchSites = 10_000_000, 10

func benchUpdates() (*model.Weights, []*model.Weights) {
	g := &model.Weights{Tensors: []model.Tensor{{Name: "w", Shape: []int{benchParams}, Data: make([]float32, benchParams)}}}
	us := make([]*model.Weights, benchSites)
	for i := range us {
		us[i] = g.Clone()
		for j := range us[i].Tensors[0].Data {
			us[i].Tensors[0].Data[j] = float32(i + j%7)
		}
	}
	return g, us
}

// BenchmarkFedAvg streams N=10 updates of P=10M params; bytes are update
// bytes read (b.SetBytes), so ns/op converts to GB/s.
func BenchmarkFedAvg(b *testing.B) {
	g, us := benchUpdates()
	b.SetBytes(int64(benchSites) * g.Bytes())
	b.ReportAllocs()
	for b.Loop() {
		r, _ := (&FedAvg{}).Begin(g)
		for _, u := range us {
			if err := r.Add(u, 100); err != nil {
				b.Fatal(err)
			}
		}
		if _, _, err := r.Result(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNaiveAverage is the baseline: hold every update, then average
// parameter by parameter across them (what collecting then averaging does).
func BenchmarkNaiveAverage(b *testing.B) {
	g, us := benchUpdates()
	b.SetBytes(int64(benchSites) * g.Bytes())
	b.ReportAllocs()
	for b.Loop() {
		out := g.ZerosLike()
		d := out.Tensors[0].Data
		for j := range d {
			var s float64
			for _, u := range us {
				s += 100 * float64(u.Tensors[0].Data[j])
			}
			d[j] = float32(s / float64(100*len(us)))
		}
	}
}
