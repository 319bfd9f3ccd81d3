package server

import (
	"hash/fnv"
	"math/rand/v2"
	"slices"

	"github.com/cohortfl/cohort/job"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
)

// Virtual clients (job sites.virtual): each round the coordinator samples
// sites.per_round client ids from [0, sites.virtual) and splits them among
// the round's workers, contiguous slices of the ascending sample in the
// workers' name order. A worker trains its clients from the same global
// model and answers with one update, their sample-weighted mean over
// their total samples, so that FedAvg over the workers is FedAvg over the
// clients whatever the number of workers.

// sampleClients returns k distinct client ids from [0, n), ascending,
// drawn uniformly and deterministically from (seed, arm, round) by Floyd's
// algorithm: O(k) time and memory, whatever n. It needs 0 ≤ k ≤ n.
func sampleClients(seed int64, arm string, round int, n int64, k int) []int64 {
	h := fnv.New64a()
	h.Write([]byte(arm))
	r := rand.New(rand.NewPCG(uint64(seed), h.Sum64()^uint64(round)*0x9e3779b97f4a7c15))
	seen := make(map[int64]struct{}, k)
	out := make([]int64, 0, k)
	for j := n - int64(k); j < n; j++ {
		t := r.Int64N(j + 1)
		if _, dup := seen[t]; dup {
			t = j
		}
		seen[t] = struct{}{}
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}

// splitClients returns the share of ids that worker trains among workers
// (in name order): the worker's contiguous slice, the shares differing in
// length by at most one. A worker not among them gets none.
func splitClients(ids []int64, workers []string, worker string) []int64 {
	i := slices.Index(workers, worker)
	if i < 0 {
		return nil
	}
	n, w := len(ids), len(workers)
	return ids[i*n/w : (i+1)*n/w]
}

// virtualClients returns the virtual clients site trains this round, for
// its task; nil when the job has no virtual clients. The round's sample is
// drawn once, on the first call.
func (x *roundExec) virtualClients(site string) *pb.VirtualClients {
	spec := x.a.j.spec
	v := spec.Sites
	if v.Virtual <= 0 || x.a.kind != pb.TaskKind_TASK_KIND_TRAIN {
		return nil
	}
	if x.sample == nil {
		x.sample = sampleClients(spec.Seed, x.a.arm.Name, x.r, v.Virtual, v.ClientsPerRound)
	}
	alpha := 0.0
	if spec.Data.Partition.Kind == job.PartitionDirichlet {
		alpha = spec.Data.Partition.Alpha
	}
	return &pb.VirtualClients{
		ClientIds:        splitClients(x.sample, x.sm.Selected(), site),
		Seed:             spec.Seed,
		Alpha:            alpha,
		SamplesPerClient: int32(v.SamplesPerClient),
	}
}
