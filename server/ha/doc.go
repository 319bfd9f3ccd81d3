// Package ha makes the coordinator highly available: its replicated state
// lives in a hashicorp/raft cluster of coordinators, one [Node] each.
//
// The state — jobs, the last committed rounds of each job's arms with the
// digest of their global models and cumulative totals, the site registry,
// and the global models themselves as content-addressed blobs — is a
// raft finite-state machine, [FSM]. Commands are versioned and
// checksummed ([Encode]); a round commits once only and rounds are
// contiguous ([ErrRoundConflict]); a round may only reference a sealed
// blob, and a blob is sealed only once a quorum of nodes holds it.
//
// Models stay out of the Raft log when the node has a blob store
// ([Config.Blobs], server/blobs): the leader's [Node.PutModel] streams the
// model into its store, hashing it once, and, as it writes, pushes the
// same bytes to the followers a quorum needs besides it (one of two in a
// cluster of three; [BlobPusher], [Node.ReceiveBlob]: each writes them
// into its own store and commits them against the digest sent last), so
// that a commit costs about one write. The other followers are asked to
// fetch the model from the leader's store once the quorum holds it
// ([BlobTransport.HoldBlob]; the coordinators' BlobService in production),
// so that their copies share neither the leader's links nor the disks
// with the commit. Beyond [Config.PushBuffer] bytes the leader's write
// goes at the pace of the pushed followers; one whose push fails or
// leaves the write waiting 10 s is dropped and fetches the model once
// written. The others are asked at once then, or 10 s after the write
// when a pushed follower has not answered, and the next put pushes first
// to the followers that failed, or held the write up, least recently.
// The leader waits for a quorum, itself included, to hold it; only then
// does one small entry record its digest and size. A follower that lacks a blob
// when it applies that entry fetches it first (from the leader, then any
// peer, a few times over); if it cannot, it logs so and
// [FSM.OpenModel] fetches it when it is read. Snapshots carry digests,
// and a restore fetches what the store lacks. Entries and snapshots of
// older versions, which carry the bytes, still apply: the bytes go into
// the store. [Node.CollectBlobs] (every minute) removes from the store the
// blobs the state no longer references, after the store's grace. Without
// a store, models travel through the log in chunks and live in memory.
//
// A [Node] ([Open]) wraps raft with its raft-boltdb log, file snapshots
// and a TCP or mutual-TLS transport. Its proposing methods (SubmitJob,
// PutModel, CommitRound, …) succeed on the leader only and return a
// [*NotLeaderError] carrying the leader's gRPC address elsewhere. It never
// silently forks or loses the cluster: Open refuses, naming the fix, a
// data dir of another node or another peer list (cluster.json), one in
// use, a damaged raft log or snapshot, and a stored raft configuration
// other than the configured peers; and once running, a node whose peer
// list disagrees with the cluster's (the first leader records its hash)
// stops itself and reports on [Node.Err]. A one-voter cluster may have no
// raft address: it runs without network. Membership changes are not
// supported yet. The FSM keeps the models of the last two committed rounds
// of each arm.
package ha
