package cohortv1

import (
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

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

// AgentInstanceKey is the gRPC metadata key under which a site agent
// sends, on Join and Session, an id drawn once per agent process. The
// coordinator accepts a reconnect of the instance that holds a site's
// session and refuses another instance (a second agent with the same kit)
// with codes.FailedPrecondition while that session is alive.
const AgentInstanceKey = "cohort-agent-instance"

// NotLeader reports whether err is a coordinator's refusal for not being
// the leader and, when it names one, the leader's gRPC address.
func NotLeader(err error) (leaderAddress string, ok bool) {
	st, isStatus := status.FromError(err) // also through wrapping; the details survive
	if !isStatus || st.Code() != codes.Unavailable {
		return "", false
	}
	for _, d := range st.Details() {
		if info, isInfo := d.(*errdetails.ErrorInfo); isInfo && info.GetReason() == NotLeaderReason && info.GetDomain() == ErrorDomain {
			return info.GetMetadata()[LeaderAddressKey], true
		}
	}
	return "", false
}

// StateWord is a job state as people read it: queued, running, succeeded,
// failed, cancelled (the enum's name without JOB_STATE_, in lower case).
// The coordinator's logs and events and the admin commands all print it.
func StateWord(s JobState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "JOB_STATE_"))
}
