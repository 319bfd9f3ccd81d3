package deploy

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestCoordinatorLimits: session_timeout, max_model_bytes and rate_limits
// decode, default and refuse bad values naming the key.
func TestCoordinatorLimits(t *testing.T) {
	base := "name: coord-1\nlisten: \"127.0.0.1:7443\"\n"
	c, err := parseCoordinatorConfig("c.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	if c.SessionTimeout != DefaultSessionTimeout || c.MaxModelBytes != 0 || c.RateLimits != (RateLimits{}) {
		t.Errorf("defaults: session_timeout %s, max_model_bytes %d, rate_limits %+v; want %s, 0 and zero (the coordinator's defaults)",
			c.SessionTimeout, c.MaxModelBytes, c.RateLimits, DefaultSessionTimeout)
	}
	for _, tc := range []struct {
		name, yaml string
		want       *CoordinatorConfig // the fields checked; nil: an error
		err        string
	}{
		{"set", "session_timeout: 1m\nmax_model_bytes: 8GiB\nrate_limits: {join: {rate: 0.5, burst: 4}, admin: {rate: -1}}\n",
			&CoordinatorConfig{SessionTimeout: time.Minute, MaxModelBytes: 8 << 30, RateLimits: RateLimits{Join: RateLimit{Rate: 0.5, Burst: 4}, Admin: RateLimit{Rate: -1}}}, ""},
		{"bytes", "max_model_bytes: 1000000\n", &CoordinatorConfig{SessionTimeout: DefaultSessionTimeout, MaxModelBytes: 1e6}, ""},
		{"off", "session_timeout: 0s\n", &CoordinatorConfig{}, ""},
		{"memory limit", "memory_limit: 2GiB\n", &CoordinatorConfig{SessionTimeout: DefaultSessionTimeout, MemoryLimit: 2 << 30}, ""},
		{"negative memory limit", "memory_limit: -1\n", nil, "memory_limit: must be positive"},
		{"bad size", "max_model_bytes: 8GB\n", nil, `max_model_bytes: "8GB" is not a number of bytes or a size such as "8GiB"`},
		{"negative size", "max_model_bytes: -1\n", nil, "max_model_bytes: must be positive"},
		{"short timeout", "session_timeout: 2s\n", nil, "session_timeout: 2s is under two heartbeats"},
		{"bad rate", "rate_limits: {join: {rate: fast}}\n", nil, "rate_limits.join.rate"},
		{"bad burst", "rate_limits: {admin: {burst: -3}}\n", nil, "rate_limits.admin.burst: must be at least 1"},
		{"typo", "rate_limits: {joins: {rate: 1}}\n", nil, `unknown key "joins"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseCoordinatorConfig("c.yaml", []byte(base+tc.yaml))
			if tc.want == nil {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("parseCoordinatorConfig = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := &CoordinatorConfig{SessionTimeout: c.SessionTimeout, MaxModelBytes: c.MaxModelBytes, MemoryLimit: c.MemoryLimit, RateLimits: c.RateLimits}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("parseCoordinatorConfig (-want +got):\n%s", diff)
			}
		})
	}
}
