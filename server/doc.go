// Package server is Cohort's coordinator: the registry of connected sites,
// the gRPC services sites and admins call (CoordinatorService, JobsService),
// the content-addressed store of global models that sites fetch in chunks,
// and the job runner that drives each arm of a job round by round. The
// decisions of a round (who is selected, when the deadline passes, whether
// quorum is met, what commits) are taken by the pure state machine in
// server/round; this package only feeds it events and carries out its
// actions.
//
// With a [Replica] (server/ha's Node) the coordinator is one of a Raft
// cluster: it serves only while its node leads (followers refuse with
// the leader's address), replicates every job, its tracking run ids and
// each committed round with its global model, and on gaining the lead
// resumes the running jobs at the round after the last committed one, in
// the same tracking runs, marking the failover on them.
//
// Received updates wait for their round on disk, not in memory (spill.go,
// Config.SpillDir): checked as their chunks arrive, folded from their file
// chunk by chunk, and removed once folded or refused.
package server
