package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/cohortfl/cohort/data"
	"github.com/cohortfl/cohort/job"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
)

// LocalData is a deployed site's data: each dataset the site holds, read
// from the folder its config names (or the loader's default search when it
// names none), once, and served to every task; synthetic data it
// generates for each task from the task's parameters and the site's name.
// It implements [DataSource], [TaskDataSource] and [Lineager]. A LocalData
// is safe for concurrent use.
type LocalData struct {
	// Paths maps a dataset name to the folder holding it.
	Paths map[string]string
	// Site is the site's name, from which (with the job's seed) it
	// generates synthetic data.
	Site string
	// Logger receives where the data came from; nil discards it.
	Logger *slog.Logger

	mu    sync.Mutex
	cache map[string][2]*data.Dataset
	// synth is the last synthetic data generated, under its parameters.
	synth    *pb.SyntheticData
	synthSet [2]*data.Dataset
	// synthVirtual says synthSet is the pool of virtual clients
	// ([VirtualPoolData]).
	synthVirtual bool
}

var (
	_ TaskDataSource = (*LocalData)(nil)
	_ DataSource     = (*LocalData)(nil)
	_ Lineager       = (*LocalData)(nil)
)

// LoadTask implements [TaskDataSource]: a synthetic dataset is generated
// from the parameters the task's model spec carries and the site's name,
// as `cohort run` generates this site's ([SyntheticSiteData]); the last
// one generated is kept. Other datasets are [LocalData.Load]'s.
func (l *LocalData) LoadTask(ctx context.Context, t *pb.Task) (*data.Dataset, *data.Dataset, error) {
	if t.GetDataset() != job.DatasetSynthetic {
		return l.Load(ctx, t.GetDataset(), t.GetKind())
	}
	sd := t.GetModel().GetSyntheticData()
	switch {
	case sd == nil:
		return nil, nil, errors.New("the coordinator sent no parameters of the job's synthetic data; upgrade the coordinator to this site's version")
	case l.Site == "":
		return nil, nil, errors.New("this site has no name to generate its synthetic data from; set name in site.yaml")
	}
	virtual := t.GetVirtual() != nil // a worker of virtual clients draws them from the common pool
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.synth != nil && proto.Equal(l.synth, sd) && l.synthVirtual == virtual {
		return l.synthSet[0], l.synthSet[1], nil
	}
	generate := SyntheticSiteData
	if virtual {
		generate = func(sd *pb.SyntheticData, _ string) (*data.Dataset, *data.Dataset, error) { return VirtualPoolData(sd) }
	}
	train, test, err := generate(sd, l.Site)
	if err != nil {
		return nil, nil, err
	}
	if l.Logger != nil {
		nTest := 0
		if test != nil {
			nTest = test.N
		}
		l.Logger.Info("synthetic_data_generated", "site", l.Site, "seed", sd.GetSeed(), "train", train.N, "test", nTest)
	}
	l.synth, l.synthSet, l.synthVirtual = sd, [2]*data.Dataset{train, test}, virtual
	return train, test, nil
}

// Load implements [DataSource]: the site's training and test data of
// dataset. Fashion-MNIST is the only dataset a deployed site reads from
// disk; synthetic data it generates for each task ([LocalData.LoadTask]).
func (l *LocalData) Load(ctx context.Context, dataset string, kind pb.TaskKind) (*data.Dataset, *data.Dataset, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c, ok := l.cache[dataset]; ok {
		return c[0], c[1], nil
	}
	switch dataset {
	case job.DatasetFashionMNIST:
	case job.DatasetSynthetic:
		return nil, nil, errors.New("synthetic data is generated from the task's parameters; this data source was asked without the task")
	default:
		return nil, nil, fmt.Errorf("this site holds no dataset %q; list it under data: in site.yaml", dataset)
	}
	train, test, err := data.LoadFashionMNIST(ctx, data.LoadOptions{Path: l.Paths[dataset], Setting: "site.yaml data." + dataset, NoDownload: true, Logger: l.Logger})
	if err != nil {
		return nil, nil, err
	}
	if l.cache == nil {
		l.cache = make(map[string][2]*data.Dataset)
	}
	l.cache[dataset] = [2]*data.Dataset{train, test}
	return train, test, nil
}

// Lineage implements [Lineager]: the training data of every dataset
// site.yaml lists, loading each once; the loads are the ones the site's
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
		out = append(out, DatasetLineage(n, train))
	}
	return out, nil
}

// DatasetLineage is the lineage a site declares of training data d of
// dataset: its name as the site's updates give it ("DATASET/SPLIT"), its
// digest ([data.Dataset.Digest]) and sample count.
func DatasetLineage(dataset string, d *data.Dataset) *pb.DatasetInfo {
	return &pb.DatasetInfo{Name: dataset + "/" + d.Name, Sha256: d.Digest(), NumSamples: int64(d.N)}
}

// SyntheticSiteData generates one site's Synthetic(α,β) data from the
// parameters sd a task carries and the site's name: its partition and,
// when sd.TestFraction > 0, its local test split
// ([data.SyntheticSiteSplit]). `cohort run` makes every site's data from
// the same parameters, so the same job seed and site name give the same
// samples in both.
func SyntheticSiteData(sd *pb.SyntheticData, site string) (train, test *data.Dataset, err error) {
	cfg := data.SyntheticConfig{
		Alpha: sd.GetAlpha(), Beta: sd.GetBeta(), Dim: int(sd.GetDim()), Classes: int(sd.GetClasses()),
		SamplesPerDevice: int(sd.GetSamplesPerSite()),
	}
	return data.SyntheticSiteSplit(cfg, sd.GetSeed(), site, sd.GetTestFraction())
}
