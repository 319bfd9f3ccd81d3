package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/cohortfl/cohort/data"
)

// dataCmd runs `cohort data split`: it cuts Fashion-MNIST into one folder
// per site, so that several sites on one machine each hold their own data,
// as institutes do.
func dataCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && isHelp(args[0]) {
		args = []string{"split", "--help"}
	}
	if len(args) == 0 || args[0] != "split" {
		fmt.Fprintln(stderr, "Usage: cohort data split [flags] --out DIR SITE...")
		return errors.New("data: the only sub-command is split")
	}
	fs := flag.NewFlagSet("data split", flag.ContinueOnError)
	fs.SetOutput(stderr)
	from := fs.String("from", "", "the Fashion-MNIST folder to split (default: the loader's search: $COHORT_DATA, "+data.SystemFashionMNIST+", the user cache)")
	out := fs.String("out", "", "the folder that receives one sub-folder per site (required)")
	kind := fs.String("partition", data.PartitionIID, "iid, dirichlet, labels or shards")
	alpha := fs.Float64("alpha", 0.5, "Dirichlet concentration (partition dirichlet)")
	labels := fs.Int("labels", 2, "classes per site (partition labels)")
	shards := fs.Int("shards", 2, "shards per site (partition shards)")
	seed := fs.Int64("seed", 42, "seed of the split")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: cohort data split [flags] --out DIR SITE...")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args[1:], stdout); err != nil {
		return err
	}
	sites := fs.Args()
	if *out == "" || len(sites) == 0 {
		fs.Usage()
		return errors.New("data split needs --out and at least one site name")
	}
	for _, s := range sites {
		if s == "" || strings.ContainsAny(s, `/\`) || s == "." || s == ".." {
			return fmt.Errorf("site name %q cannot be a folder name; use letters, digits and dashes", s)
		}
	}
	train, test, err := data.LoadFashionMNIST(ctx, data.LoadOptions{Path: *from, Setting: "--from"})
	if err != nil {
		return err
	}
	parts, err := data.Partition(train, data.PartitionSpec{Kind: *kind, Alpha: *alpha, Labels: *labels, ShardsPerSite: *shards}, len(sites), *seed)
	if err != nil {
		return fmt.Errorf("splitting: %w", err)
	}
	// Each site gets its share of the test set too, for its local
	// evaluation.
	testParts, err := data.Partition(test, data.PartitionSpec{Kind: data.PartitionIID}, len(sites), *seed+1)
	if err != nil {
		return fmt.Errorf("splitting the test set: %w", err)
	}
	for i, s := range sites {
		dir := filepath.Join(*out, s)
		if err := data.WriteFashionMNIST(dir, parts[i], testParts[i]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%-12s %6d train %5d test  labels %v  → %s\n", s, parts[i].N, testParts[i].N, parts[i].LabelHistogram(), dir)
	}
	return nil
}
