package server

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"

	"github.com/cohortfl/cohort/aggregators"
	"github.com/cohortfl/cohort/model"
)

// A large global model is not kept in memory between the moment it is
// committed and the end of the round that starts from it: it stays in the
// coordinator's blob store (server/blobs, where ha.Node.PutModel wrote
// it), and every reader reads the ranges it needs from the file — sites'
// downloads, the check of each arriving update (spill.go), and the
// round's aggregate (aggregators.GlobalStreamer). The coordinator's
// memory in a round is then the sum alone (issue 17). Models the strategy
// needs whole (DP, a server optimizer, a robust rule), models below
// Config.SpillAbove and replicas without a blob store (no Config.ModelDir) stay
// in memory.

// globalSource is the global model arriving updates are checked against
// and shrunk toward: in memory ([memGlobal]) or in the blob store
// ([globalFile]).
type globalSource interface {
	aggregators.GlobalReader
	// block returns the values [off, off+n) of tensor t: in place where
	// the model is in memory, else read into buf (len(buf) ≥ n).
	block(t, off, n int, buf []float32) ([]float32, error)
}

// memGlobal is a global model in memory as a [globalSource].
type memGlobal struct{ w *model.Weights }

func (m memGlobal) Shell() *model.Weights { return m.w }

func (m memGlobal) ReadFloats(t, off int, dst []float32) error {
	copy(dst, m.w.Tensors[t].Data[off:off+len(dst)])
	return nil
}

func (m memGlobal) block(t, off, n int, _ []float32) ([]float32, error) {
	return m.w.Tensors[t].Data[off : off+n], nil
}

// globalFile is a global model read in place from its blob: the file
// stays open while the arm or a round reads it, so that a blob collected
// meanwhile (unlinked) is still read.
type globalFile struct {
	*model.TensorFile
	f      *os.File
	shell  *model.Weights
	digest string
	sum    [32]byte
}

// Shell is the model's names and shapes, made once.
func (g *globalFile) Shell() *model.Weights { return g.shell }

func (g *globalFile) block(t, off, n int, buf []float32) ([]float32, error) {
	b := buf[:n]
	if err := g.ReadFloats(t, off, b); err != nil {
		return nil, fmt.Errorf("reading the global model %.12s from the blob store: %w", g.digest, err)
	}
	return b, nil
}

// load decodes the whole model into memory.
func (g *globalFile) load() (*model.Weights, error) {
	br := bufio.NewReaderSize(io.NewSectionReader(g.f, 0, g.Size()), 1<<20)
	w, _, err := model.DecodeSafetensors(br, g.Size())
	if err != nil {
		return nil, fmt.Errorf("reading the global model %.12s from the blob store: %w", g.digest, err)
	}
	return w, nil
}

func (g *globalFile) close() {
	if g != nil {
		g.f.Close()
	}
}

// sourceOf returns global's values as a [globalSource].
func sourceOf(w *model.Weights) globalSource { return memGlobal{w} }

// tensorLen returns the number of values of g's tensor t.
func tensorLen(g globalSource, t int) int { return g.Shell().Tensors[t].Len() }

// modelLen returns the number of values of g's tensors in all.
func modelLen(g globalSource) int {
	n := 0
	for _, t := range g.Shell().Tensors {
		n += t.Len()
	}
	return n
}

// keepsOnDisk reports whether an arm keeps its global model w in the blob
// store rather than memory: a model above SpillAbove whose strategy folds
// it in place and holds no state beside it.
func (c *Coordinator) keepsOnDisk(a *armRun, w *model.Weights) bool {
	if a.inMemory || w == nil || w.Bytes() <= c.spillAbove() {
		return false
	}
	if _, ok := a.strategy.(aggregators.GlobalStreamer); !ok {
		return false
	}
	return withState(w, a.strategy) == w
}

// toDisk makes the arm read its global model, committed to the replica
// as digest, from the blob store and drops it from memory. A replica
// that does not keep models' bytes in files (a coordinator without
// Config.ModelDir or a replica of its own, a cluster without blob stores)
// leaves it in memory.
func (c *Coordinator) toDisk(a *armRun, digest string) error {
	rc, err := c.rep.FSM().OpenModel(digest)
	if err != nil {
		return nil // the replica keeps no bytes: the model stays in memory
	}
	f, ok := rc.(*os.File)
	if !ok {
		rc.Close()
		return nil
	}
	gf, err := openGlobalFile(f, digest)
	if err != nil {
		f.Close()
		return err
	}
	a.file.close()
	a.file, a.global = gf, nil
	return nil
}

// openGlobalFile reads the header of the blob f, whose digest is digest.
func openGlobalFile(f *os.File, digest string) (*globalFile, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("the global model %.12s in the blob store: %w", digest, err)
	}
	tf, err := model.OpenTensorFile(f, st.Size())
	if err != nil {
		return nil, fmt.Errorf("the global model %.12s in the blob store: %w", digest, err)
	}
	gf := &globalFile{TensorFile: tf, f: f, shell: tf.Shell(), digest: digest}
	if n, err := hex.Decode(gf.sum[:], []byte(digest)); err != nil || n != len(gf.sum) {
		return nil, fmt.Errorf("the global model's digest %q is not a hex SHA-256", digest)
	}
	return gf, nil
}

// putInitial writes an arm's initial model to the replica and reads it
// from there, where the arm keeps its global model on disk: the first
// round then holds no more than the later ones.
func (c *Coordinator) putInitial(ctx context.Context, a *armRun) error {
	if !c.keepsOnDisk(a, a.global) {
		return nil
	}
	w := a.global
	digest, err := c.rep.PutModel(ctx, func(out io.Writer) error { return model.EncodeSafetensors(out, w, nil) })
	if err != nil {
		return fmt.Errorf("writing the initial model to the blob store: %w", err)
	}
	if err := c.toDisk(a, digest); err != nil {
		return err
	}
	if a.file != nil && w.Bytes() >= model.CollectAfterBytes {
		// Where nothing else holds it (the job's last arm), the model in
		// memory goes now rather than beside the round's sum.
		w = nil
		debug.FreeOSMemory()
	}
	return nil
}

// beginRound starts the round's aggregate: over the model in place where
// the arm keeps it on disk, else over the model in memory. A strategy
// that turns out to need the model whole (DP) gets it loaded, and the arm
// keeps it in memory from then on.
func (c *Coordinator) beginRound(a *armRun, r int) (aggregators.Round, error) {
	if a.file != nil {
		if gs, ok := a.strategy.(aggregators.GlobalStreamer); ok {
			agg, err := gs.BeginStreamed(a.file, a.seed, r)
			if !errors.Is(err, aggregators.ErrNoStream) {
				return agg, err
			}
		}
		w, err := a.file.load()
		if err != nil {
			return nil, err
		}
		a.file.close()
		a.file, a.global, a.inMemory = nil, w, true
	}
	return aggregators.BeginRound(a.strategy, a.global, a.seed, r)
}

// modelBytes is the size of the arm's global model's values.
func (a *armRun) modelBytes() int64 {
	if a.file != nil {
		return 4 * int64(modelLen(a.file))
	}
	return a.global.Bytes()
}

// globalWeights returns the arm's global model in memory, read from the
// blob store where the arm keeps it there.
func (a *armRun) globalWeights() (*model.Weights, error) {
	if a.file != nil {
		return a.file.load()
	}
	return a.global, nil
}
