// Package federation runs a whole federation on one machine: a coordinator
// on a loopback port, one site agent per partition, each with its own gRPC
// connection, plus a site holding the pooled data for the centralized arm,
// and the embedded tracking store. `cohort run` and the end-to-end tests use
// it; nothing in it is simulated but the distance between the sites, and
// the attacks of the sites a job marks as adversaries ([Attacker]).
package federation
