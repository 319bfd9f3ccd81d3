package privacy_test

import (
	"fmt"

	"github.com/cohortfl/cohort/privacy"
)

// DP-FedAvg with 10 of 1,000 sites per round, σ = 1 and 1,000 rounds.
func ExampleEpsilon() {
	eps, order, _ := privacy.Epsilon(10.0/1000, 1.0, 1000, 1e-5)
	fmt.Printf("ε = %.3f at order %v\n", eps, order)
	// Output: ε = 2.108 at order 8
}
