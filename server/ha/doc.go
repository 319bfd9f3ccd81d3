// Package ha holds the coordinator's replicated state — jobs, the last
// committed round of each job's arms with the digest of its global model,
// the site registry and the global models themselves as content-addressed
// blobs — as a hashicorp/raft finite-state machine, [FSM]. Commands are
// versioned and checksummed ([Encode]); a round commits once only and
// rounds are contiguous ([ErrRoundConflict]); a round may only reference a
// sealed blob, so with the blob's chunks travelling through the Raft log a
// committed round's model is on a quorum of nodes. This is the foundation
// of issue 7: the Node that wraps raft (stores, transport, bootstrap,
// refusals) is still to come.
package ha
