// Package archtest holds the test that keeps Cohort's layout honest: it
// lists every package's imports with `go list -json`, test files included
// (TestImports, XTestImports), and fails on an edge DESIGN.md's Layout
// table does not allow — an upward or sideways import between folders, a
// third-party module outside the folder that owns it, or any I/O in
// server/round, the pure round state machine. Each failure names the rule;
// the exceptions the code needs are listed with their reasons.
package archtest
