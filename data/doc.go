// Package data loads the datasets sites train on and splits them across
// sites. It reads Fashion-MNIST's IDX files (plain or gzip) from the job's
// data.path, $COHORT_DATA, Debian's /usr/share/datasets/fashion-mnist or
// the user cache, downloading them MD5-checked from the official address
// as a last resort; it generates the FedProx paper's Synthetic(α,β)
// federations, whole or one site at a time from the job's seed and the
// site's name (SyntheticSite); and it partitions a dataset across sites (iid,
// dirichlet(α), labels(k), shards) with seeded PCG generators, so that the
// same job seed gives the same split on every run and platform. A
// stratified 10% subset of Fashion-MNIST ships in testdata/fmnist-subset
// for tests and offline demos.
package data
