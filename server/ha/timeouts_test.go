package ha

import (
	"testing"
	"time"
)

func TestRaftTimeoutDefaults(t *testing.T) {
	one := []Peer{{ID: "a"}}
	three := []Peer{{ID: "a"}, {ID: "b"}, {ID: "c"}}
	tests := []struct {
		name                       string
		cfg                        Config
		heartbeat, election, lease time.Duration
	}{
		{"one voter leads at once", Config{ID: "a", Peers: one}, soloTimeout, soloTimeout, soloTimeout},
		{"a cluster takes clusterTimeout", Config{ID: "a", Peers: three}, 2 * time.Second, 2 * time.Second, 2 * time.Second},
		{"a cluster's lease follows its heartbeat", Config{ID: "a", Peers: three, HeartbeatTimeout: 300 * time.Millisecond}, 300 * time.Millisecond, 2 * time.Second, 300 * time.Millisecond},
		{"a lease set is kept", Config{ID: "a", Peers: three, LeaderLeaseTimeout: time.Second}, 2 * time.Second, 2 * time.Second, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.cfg.raftConfig(nil)
			if c.HeartbeatTimeout != tt.heartbeat || c.ElectionTimeout != tt.election || c.LeaderLeaseTimeout != tt.lease {
				t.Errorf("heartbeat, election, lease = %s, %s, %s; want %s, %s, %s",
					c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout, tt.heartbeat, tt.election, tt.lease)
			}
		})
	}
}
