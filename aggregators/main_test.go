package aggregators

import (
	"testing"

	"go.uber.org/goleak"
)

// Add and Result run workers; none may outlive the call.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
