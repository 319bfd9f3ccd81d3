// Package archtest holds the test that keeps Cohort's layout honest: it
// lists every package's imports with `go list` and fails on an edge the
// design forbids (server and client importing each other, gorgonia outside
// train, a leaf package reaching up into the coordinator).
package archtest
