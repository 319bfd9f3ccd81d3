package server

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"sync"

	"github.com/cohortfl/cohort/model"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
)

// storedModel is one global model that sites fetch. It keeps the weights,
// not their encoding: the safetensors bytes are encoded again for each
// download (encoding is cheap beside the network; a second copy of a large
// model in memory is not), but for a small model's, kept to go in its
// tasks. The weights must not change while the model is
// stored; a site that gets other bytes refuses them by their checksum.
type storedModel struct {
	id   string
	w    *model.Weights
	file *globalFile // instead of w: the model's blob, sent as it is
	size int64       // bytes of the safetensors encoding
	sum  [sha256.Size]byte
	// inline is the encoding of a model of at most inlineModelBytes, made
	// once: it travels in each task (pb.Task.ModelData).
	inline []byte
	refs   int
}

// inlineModelBytes is the largest model sent in its tasks rather than by
// FetchModel: a round of 10,000 sites then makes 10,000 calls fewer, and
// a task message stays small.
const inlineModelBytes = 64 << 10

// encode writes the model's safetensors bytes to w.
func (m *storedModel) encode(w io.Writer) error {
	switch {
	case m.inline != nil:
		_, err := w.Write(m.inline)
		return err
	case m.file != nil:
		_, err := io.Copy(w, io.NewSectionReader(m.file.f, 0, m.size))
		return err
	}
	return model.EncodeSafetensors(w, m.w, nil)
}

// taskModel sets t's model: its id, size and SHA-256, and its bytes
// where they travel in the task.
func (m *storedModel) taskModel(t *pb.Task) {
	t.ModelId, t.ModelSha256, t.ModelSize, t.ModelData = m.id, m.sum[:], m.size, m.inline
}

// values returns the model's values for the check of an update.
func (m *storedModel) values() globalSource {
	if m.file != nil {
		return m.file
	}
	return sourceOf(m.w)
}

// modelStore holds the global models that sites fetch, addressed by the hex
// SHA-256 of their safetensors encoding. Models are reference counted: the
// runner holds one reference per model it still hands out.
type modelStore struct {
	mu     sync.Mutex
	models map[string]*storedModel
}

func newModelStore() *modelStore {
	return &modelStore{models: make(map[string]*storedModel)}
}

// put stores w, which must not change until released, and returns it with
// its id (the hash of its encoding, kept only for a small model). Each put
// takes a reference that release gives back.
func (s *modelStore) put(w *model.Weights) (*storedModel, error) {
	// A small model is encoded once, into the bytes its tasks carry; a
	// larger one only hashed.
	var inline []byte
	var sum [sha256.Size]byte
	var size int64
	if w.Bytes() <= inlineModelBytes {
		b, err := model.MarshalSafetensors(w, nil)
		if err != nil {
			return nil, fmt.Errorf("encoding global model: %w", err)
		}
		sum, size = sha256.Sum256(b), int64(len(b))
		if size <= inlineModelBytes {
			inline = b
		}
	} else {
		var err error
		if sum, size, err = model.DigestSafetensors(w, nil); err != nil {
			return nil, fmt.Errorf("encoding global model: %w", err)
		}
	}
	id := hex.EncodeToString(sum[:])
	s.mu.Lock()
	defer s.mu.Unlock()
	if m, ok := s.models[id]; ok {
		m.refs++
		return m, nil
	}
	m := &storedModel{id: id, w: w, size: size, sum: sum, inline: inline, refs: 1}
	s.models[id] = m
	return m, nil
}

// putFile is put of a model kept in the blob store: its blob is its
// encoding, and its digest its id. A model of that id stored already
// (the same bytes) takes the reference.
func (s *modelStore) putFile(f *globalFile) *storedModel {
	// A small model's bytes, read before the store is locked; should the
	// read fail, its sites fetch the file instead.
	var inline []byte
	if size := f.Size(); size <= inlineModelBytes {
		b := make([]byte, size)
		if n, _ := f.f.ReadAt(b, 0); n == len(b) {
			inline = b
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if m, ok := s.models[f.digest]; ok {
		m.refs++
		return m
	}
	m := &storedModel{id: f.digest, file: f, size: f.Size(), sum: f.sum, inline: inline, refs: 1}
	s.models[f.digest] = m
	return m
}

func (s *modelStore) get(id string) (*storedModel, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.models[id]
	return m, ok
}

func (s *modelStore) release(m *storedModel) {
	if m == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m.refs--
	if m.refs <= 0 {
		delete(s.models, m.id)
	}
}
