package main

import (
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"

	"github.com/cohortfl/cohort/internal/activation"
)

// The names of the sockets a service manager may pass (systemd socket
// activation: FileDescriptorName= in the .socket unit).
const (
	socketGRPC = "grpc" // cohort coordinator: the gRPC server, for sites and admins
	socketRaft = "raft" // cohort coordinator: raft, for the other coordinators
	socketHTTP = "http" // cohort ui: the MLflow REST API and the web UI
)

// inheritedSockets returns the sockets passed to this process by name
// (none when nothing was passed), refusing a name command does not take.
// A command serves on an inherited socket instead of binding its
// configured address, which stays the address it advertises.
func inheritedSockets(command string, takes ...string) (map[string]net.Listener, error) {
	socks, err := activation.Listeners()
	if err != nil {
		return nil, fmt.Errorf("cohort %s: taking the sockets the service manager passed: %w", command, err)
	}
	var unknown []string
	for _, name := range slices.Sorted(maps.Keys(socks)) {
		if !slices.Contains(takes, name) {
			unknown = append(unknown, name)
		}
	}
	if len(unknown) > 0 {
		closeListeners(socks)
		return nil, fmt.Errorf("cohort %s: inherited sockets %q: it takes %s; name each socket so (systemd: FileDescriptorName=)", command, unknown, strings.Join(takes, ", "))
	}
	return socks, nil
}

// listenOn returns the inherited socket name if there is one, else a TCP
// socket bound on addr.
func listenOn(socks map[string]net.Listener, name, addr string) (lis net.Listener, inherited bool, err error) {
	if l, ok := socks[name]; ok {
		return l, true, nil
	}
	l, err := net.Listen("tcp", addr)
	return l, false, err
}

func closeListeners(socks map[string]net.Listener) {
	for _, l := range socks {
		_ = l.Close()
	}
}
