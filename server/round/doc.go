// Package round decides one federated round as a pure, deterministic state
// machine, in the style of etcd-io/raft: the coordinator feeds it events
// (an update arrived, a site failed, the clock moved) with the time they were
// observed, and performs the actions it returns (send a task, fold an update
// into the aggregate, cancel a straggler, commit, fail). The package does no
// I/O, starts no goroutines, never sleeps and reads no clock; the same events
// give the same actions on every machine and every run, which is what lets a
// restarted or newly elected coordinator reason about a round it replays.
//
// A round selects a reproducible share of the candidate sites ([Select]),
// waits for every selected site to answer or for the deadline, and commits
// when at least [Config.MinPerRound] updates were aggregated. It waits for all
// selected sites rather than committing at the quorum, as NVIDIA FLARE does by
// default, because FedAvg weighs every update it gets: stopping at the quorum
// would systematically drop the slowest sites' data. It fails as soon as the
// quorum becomes unreachable, without waiting for the deadline.
package round
