package server

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"sync"

	"github.com/cohortfl/cohort/model"
)

// storedModel is one global model that sites fetch. It keeps the weights,
// not their encoding: the safetensors bytes are encoded again for each
// download (encoding is cheap beside the network; a second copy of a large
// model in memory is not). The weights must not change while the model is
// stored; a site that gets other bytes refuses them by their checksum.
type storedModel struct {
	id   string
	w    *model.Weights
	size int64 // bytes of the safetensors encoding
	sum  [sha256.Size]byte
	refs int
}

// encode writes the model's safetensors bytes to w.
func (m *storedModel) encode(w io.Writer) error {
	return model.EncodeSafetensors(w, m.w, nil)
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
// its id (the hash of its encoding, which is not kept). Each put takes a
// reference that release gives back.
func (s *modelStore) put(w *model.Weights) (*storedModel, error) {
	sum, size, err := model.DigestSafetensors(w, nil)
	if err != nil {
		return nil, fmt.Errorf("encoding global model: %w", err)
	}
	id := hex.EncodeToString(sum[:])
	s.mu.Lock()
	defer s.mu.Unlock()
	if m, ok := s.models[id]; ok {
		m.refs++
		return m, nil
	}
	m := &storedModel{id: id, w: w, size: size, sum: sum, refs: 1}
	s.models[id] = m
	return m, nil
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
