// Package data loads the datasets sites train on and splits them across
// sites: the Fashion-MNIST IDX loader (with its search order: the job's
// path, $COHORT_DATA, Debian's /usr/share/datasets/fashion-mnist, the user
// cache), the FedProx paper's Synthetic(α,β) generator, and the seeded
// partitioners iid, dirichlet(α), labels(k) and shards.
package data
