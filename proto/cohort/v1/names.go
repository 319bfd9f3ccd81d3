package cohortv1

// PooledDataTrainer is the trainer a site lists in Capabilities.trainers
// when it holds the pooled data of a job's centralized arm: the coordinator
// sends that arm's tasks to it.
const PooledDataTrainer = "centralized"

// A coordinator that is not the leader of its cluster refuses calls with
// codes.Unavailable and an errdetails.ErrorInfo of reason NotLeaderReason
// and domain ErrorDomain; its metadata names the leader under LeaderIDKey
// and LeaderAddressKey (the leader's gRPC host:port) when one is known.
const (
	ErrorDomain      = "cohort"
	NotLeaderReason  = "NOT_LEADER"
	LeaderIDKey      = "leader_id"
	LeaderAddressKey = "leader_address"
)
