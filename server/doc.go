// Package server is Cohort's coordinator: the registry of connected sites,
// the gRPC services sites and admins call (CoordinatorService, JobsService),
// the content-addressed store of global models that sites fetch in chunks,
// and the job runner that drives each arm of a job round by round. The
// decisions of a round (who is selected, when the deadline passes, whether
// quorum is met, what commits) are taken by the pure state machine in
// server/round; this package only feeds it events and carries out its
// actions.
package server
