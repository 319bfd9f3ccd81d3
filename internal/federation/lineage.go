package federation

import (
	"context"

	"github.com/cohortfl/cohort/client"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
)

// Lineage declares the simulated site's training data (client.Lineager).
func (s siteSource) Lineage(context.Context) ([]*pb.DatasetInfo, error) {
	if s.train == nil || s.dataset == "" {
		return nil, nil
	}
	return []*pb.DatasetInfo{client.DatasetLineage(s.dataset, s.train)}, nil
}

// declared is a data source that declares another's lineage: a simulated
// attacker's wrapped data, joining with the data it truly holds.
type declared struct {
	client.DataSource
	l client.Lineager
}

func (d declared) Lineage(ctx context.Context) ([]*pb.DatasetInfo, error) { return d.l.Lineage(ctx) }
