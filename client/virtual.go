package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cohortfl/cohort/data"
	"github.com/cohortfl/cohort/model"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/train"
)

// metricVirtualClients is the number of virtual clients a worker trained
// for an update.
const metricVirtualClients = "virtual_clients"

// trainVirtual trains the virtual clients vc lists, one after another,
// each from global on its partition of pool (drawn by
// [data.VirtualPartitioner], then dropped), and returns their
// sample-weighted mean, summed in float64 in client-id order, with their
// total samples: the coordinator's FedAvg over workers is then FedAvg over
// the clients, however they are split among workers. Each client trains
// with the task's seed mixed with its id, so that its update does not
// depend on which worker trains it. progress, if set, is told after each
// client (as batch i of n).
func trainVirtual(ctx context.Context, tr train.Trainer, global *model.Weights, pool *data.Dataset, cfg train.TrainConfig,
	vc *pb.VirtualClients, progress func(done, total int, loss float64)) (*model.Weights, train.TrainResult, error) {
	ids := vc.GetClientIds()
	if len(ids) == 0 {
		return nil, train.TrainResult{}, errors.New("the task lists no virtual clients to train; the coordinator sent an empty share")
	}
	p, err := data.NewVirtualPartitioner(pool, data.VirtualSpec{
		Seed: vc.GetSeed(), Alpha: vc.GetAlpha(), SamplesPerClient: int(vc.GetSamplesPerClient()),
	})
	if err != nil {
		return nil, train.TrainResult{}, fmt.Errorf("drawing virtual clients' partitions: %w", err)
	}
	sums := make([][]float64, len(global.Tensors))
	for i, t := range global.Tensors {
		sums[i] = make([]float64, len(t.Data))
	}
	base := cfg.Seed
	cfg.Progress = nil // per client; the worker reports clients done
	var out train.TrainResult
	var lossSum float64
	start := time.Now()
	for i, id := range ids {
		if err := ctx.Err(); err != nil {
			return nil, train.TrainResult{}, err
		}
		ds := p.ClientData(id)
		cfg.Seed = base ^ int64(mix64(uint64(id)))
		w, res, err := tr.Train(ctx, global, ds, cfg)
		if err != nil {
			return nil, train.TrainResult{}, fmt.Errorf("virtual client %d: %w", id, err)
		}
		if err := w.Compatible(global); err != nil {
			return nil, train.TrainResult{}, fmt.Errorf("virtual client %d: trained weights: %w", id, err)
		}
		n := float64(res.NumSamples)
		for ti, t := range w.Tensors {
			s := sums[ti]
			for j, v := range t.Data {
				s[j] += n * float64(v)
			}
		}
		out.NumSamples += res.NumSamples
		out.Steps += res.Steps
		out.CPUSeconds += res.CPUSeconds
		out.Epochs = res.Epochs
		lossSum += n * res.Loss
		if progress != nil {
			progress(i+1, len(ids), res.Loss)
		}
	}
	if out.NumSamples == 0 {
		return nil, train.TrainResult{}, fmt.Errorf("the %d virtual clients trained on no samples; check the dataset", len(ids))
	}
	total := float64(out.NumSamples)
	mean := global.ZerosLike()
	for ti := range mean.Tensors {
		d := mean.Tensors[ti].Data
		for j, s := range sums[ti] {
			d[j] = float32(s / total)
		}
	}
	out.Loss = lossSum / total
	out.Seconds = time.Since(start).Seconds()
	out.Metrics = map[string]float64{metricVirtualClients: float64(len(ids))}
	return mean, out, nil
}

// mix64 is SplitMix64's output function: neighbouring client ids get
// unrelated training seeds.
func mix64(s uint64) uint64 {
	s += 0x9e3779b97f4a7c15
	s = (s ^ (s >> 30)) * 0xbf58476d1ce4e5b9
	s = (s ^ (s >> 27)) * 0x94d049bb133111eb
	return s ^ (s >> 31)
}

// VirtualPoolData generates the synthetic pool that virtual clients'
// partitions are drawn from ([data.SyntheticVirtualPool]) from the
// parameters a task carries.
func VirtualPoolData(sd *pb.SyntheticData) (train, test *data.Dataset, err error) {
	cfg := data.SyntheticConfig{
		Alpha: sd.GetAlpha(), Beta: sd.GetBeta(), Dim: int(sd.GetDim()), Classes: int(sd.GetClasses()),
		SamplesPerDevice: int(sd.GetSamplesPerSite()),
	}
	return data.SyntheticVirtualPool(cfg, sd.GetSeed(), sd.GetTestFraction())
}
