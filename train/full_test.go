package train

import (
	"context"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/cohortfl/cohort/data"
)

// TestFullFashionMNIST is the experiment behind the example job's
// hyperparameters: centralized MLP 784-200-10 on the full Fashion-MNIST,
// test accuracy and wall time after every epoch. It runs only with
// COHORT_FULL_DATA=1 (minutes, not CI); COHORT_FULL_EPOCHS (default 20),
// COHORT_FULL_LR (0.05), COHORT_FULL_MOMENTUM (0), COHORT_FULL_BATCH (32)
// and COHORT_FULL_HIDDEN (200) vary it; COHORT_DATA names another folder
// than Debian's. It fails when no epoch reaches 0.88 test accuracy, the
// figure DESIGN.md holds us to.
//
//	COHORT_FULL_DATA=1 go test -run 'TestFullFashionMNIST$' -v -timeout 1h ./train/
func TestFullFashionMNIST(t *testing.T) {
	env := fullDataEnv(t)
	epochs := int(env("COHORT_FULL_EPOCHS", 20))
	cfg := TrainConfig{
		Epochs:    1,
		BatchSize: int(env("COHORT_FULL_BATCH", 32)),
		LR:        env("COHORT_FULL_LR", 0.05),
		Momentum:  env("COHORT_FULL_MOMENTUM", 0),
	}
	hidden := int(env("COHORT_FULL_HIDDEN", 200))

	ctx := context.Background()
	train, test := loadFull(t)
	tr, err := New(Config{Kind: "mlp", Hidden: []int{hidden}, InputShape: train.Shape, Classes: train.Classes})
	if err != nil {
		t.Fatal(err)
	}
	w, err := tr.Init(1)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("mlp 784-%d-10, %d train / %d test samples, batch %d, lr %g, momentum %g",
		hidden, train.N, test.N, cfg.BatchSize, cfg.LR, cfg.Momentum)
	reached := 0
	var trainSeconds float64
	for e := 1; e <= epochs; e++ {
		cfg.Seed = int64(e) // a fresh shuffle every epoch, as one long Train would do
		var res TrainResult
		w, res, err = tr.Train(ctx, w, train, cfg)
		if err != nil {
			t.Fatal(err)
		}
		trainSeconds += res.Seconds
		start := time.Now()
		ev, err := tr.Evaluate(ctx, w, test)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("epoch %2d: train loss %.4f, test loss %.4f, test accuracy %.4f, epoch %.2fs (%.0f samples/s), evaluation %.2fs",
			e, res.Loss, ev.Loss, ev.Accuracy, res.Seconds, float64(train.N)/res.Seconds, time.Since(start).Seconds())
		if ev.Accuracy >= 0.88 && reached == 0 {
			reached = e
			t.Logf("≥ 0.88 test accuracy after %d epochs, %.1fs of training", e, trainSeconds)
		}
	}
	if reached == 0 {
		t.Errorf("no epoch of %d reached 0.88 test accuracy", epochs)
	}
}

// TestFullFashionMNISTFedAvg is the federated counterpart: FedAvg over
// COHORT_FULL_SITES (default 4) IID shards of the full training set,
// COHORT_FULL_ROUNDS (20) rounds of one local epoch each, the same MLP
// and hyperparameters as [TestFullFashionMNIST], the global model's test
// accuracy after every round. Same gate: COHORT_FULL_DATA=1.
func TestFullFashionMNISTFedAvg(t *testing.T) {
	env := fullDataEnv(t)
	rounds, sites := int(env("COHORT_FULL_ROUNDS", 20)), int(env("COHORT_FULL_SITES", 4))
	cfg := TrainConfig{
		Epochs:    1,
		BatchSize: int(env("COHORT_FULL_BATCH", 32)),
		LR:        env("COHORT_FULL_LR", 0.05),
		Momentum:  env("COHORT_FULL_MOMENTUM", 0),
	}
	hidden := int(env("COHORT_FULL_HIDDEN", 200))
	ctx := context.Background()
	train, test := loadFull(t)
	perm := rand.New(rand.NewPCG(1, 1)).Perm(train.N)
	shards := make([]*data.Dataset, sites)
	for s := range shards {
		lo, hi := chunkRange(s, sites, train.N)
		shards[s] = train.Subset(perm[lo:hi])
	}
	tr, err := New(Config{Kind: "mlp", Hidden: []int{hidden}, InputShape: train.Shape, Classes: train.Classes})
	if err != nil {
		t.Fatal(err)
	}
	global, err := tr.Init(1)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("fedavg: %d IID sites of ~%d samples, %d rounds of 1 epoch, batch %d, lr %g, momentum %g",
		sites, train.N/sites, rounds, cfg.BatchSize, cfg.LR, cfg.Momentum)
	var best float64
	for r := 1; r <= rounds; r++ {
		start := time.Now()
		next := global.ZerosLike()
		for s, shard := range shards {
			cfg.Seed = int64(r*1000 + s)
			w, _, err := tr.Train(ctx, global, shard, cfg)
			if err != nil {
				t.Fatal(err)
			}
			frac := float32(shard.N) / float32(train.N)
			for i := range next.Tensors {
				for j, v := range w.Tensors[i].Data {
					next.Tensors[i].Data[j] += frac * v
				}
			}
		}
		global = next
		ev, err := tr.Evaluate(ctx, global, test)
		if err != nil {
			t.Fatal(err)
		}
		best = max(best, ev.Accuracy)
		t.Logf("round %2d: test loss %.4f, test accuracy %.4f, round %.2fs", r, ev.Loss, ev.Accuracy, time.Since(start).Seconds())
	}
	t.Logf("best test accuracy %.4f", best)
}

// fullDataEnv skips the test without COHORT_FULL_DATA=1 and returns a
// reader of numeric environment variables with defaults.
func fullDataEnv(t *testing.T) func(key string, def float64) float64 {
	t.Helper()
	if os.Getenv("COHORT_FULL_DATA") != "1" {
		t.Skip("set COHORT_FULL_DATA=1 to train on the full Fashion-MNIST")
	}
	return func(key string, def float64) float64 {
		s := os.Getenv(key)
		if s == "" {
			return def
		}
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", key, s, err)
		}
		return v
	}
}

// loadFull reads the full Fashion-MNIST from $COHORT_DATA or the Debian
// package's folder; it never downloads.
func loadFull(t *testing.T) (train, test *data.Dataset) {
	t.Helper()
	dir := os.Getenv("COHORT_DATA")
	if dir == "" {
		dir = data.SystemFashionMNIST
	}
	train, test, err := data.LoadFashionMNIST(context.Background(), data.LoadOptions{Path: dir, NoDownload: true})
	if err != nil {
		t.Fatal(err)
	}
	return train, test
}
