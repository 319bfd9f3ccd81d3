// Package leader finds the coordinator that leads a Cohort cluster. Given
// the cluster's addresses, a [Dialer] asks all of them at once and the
// first that answers as the leader wins, so an unreachable coordinator
// costs nothing while another leads; a follower's NOT_LEADER refusal that
// names the leader (pb.LeaderAddressKey) sends a question to that leader
// at once; while no leader is known it backs off exponentially with
// jitter, and a NOT_LEADER without progress backs off like any other
// failure. The site agent, the admin commands and `cohort logs -f` all
// reach the leader through it.
package leader
