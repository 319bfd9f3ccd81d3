package federation

import (
	"context"
	"fmt"
	"slices"

	"github.com/cohortfl/cohort/client"
	"github.com/cohortfl/cohort/data"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
)

// Lineage declares the simulated site's training data (client.Lineager).
func (s siteSource) Lineage(context.Context) ([]*pb.DatasetInfo, error) {
	if s.train == nil || s.dataset == "" {
		return nil, nil
	}
	return []*pb.DatasetInfo{lineageOf(s.dataset, s.train)}, nil
}

// Lineage declares the training data of every dataset site.yaml lists
// (client.Lineager), loading each once; the loads are the ones the site's
// tasks would make.
func (l *LocalData) Lineage(ctx context.Context) ([]*pb.DatasetInfo, error) {
	names := make([]string, 0, len(l.Paths))
	for n := range l.Paths {
		names = append(names, n)
	}
	slices.Sort(names)
	var out []*pb.DatasetInfo
	for _, n := range names {
		train, _, err := l.Load(ctx, n, pb.TaskKind_TASK_KIND_TRAIN)
		if err != nil {
			return nil, fmt.Errorf("dataset %s: %w", n, err)
		}
		out = append(out, lineageOf(n, train))
	}
	return out, nil
}

// lineageOf names a dataset as the site's updates do ("DATASET/SPLIT").
func lineageOf(dataset string, d *data.Dataset) *pb.DatasetInfo {
	return &pb.DatasetInfo{Name: dataset + "/" + d.Name, Sha256: d.Digest(), NumSamples: int64(d.N)}
}

// declared is a data source that declares another's lineage: a simulated
// attacker's wrapped data, joining with the data it truly holds.
type declared struct {
	client.DataSource
	l client.Lineager
}

func (d declared) Lineage(ctx context.Context) ([]*pb.DatasetInfo, error) { return d.l.Lineage(ctx) }
