package server

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync"

	"github.com/cohortfl/cohort/model"
)

// storedModel is one encoded global model.
type storedModel struct {
	id   string
	data []byte // safetensors bytes
	sum  [sha256.Size]byte
	refs int
}

// modelStore holds the encoded global models that sites fetch, addressed by
// the hex SHA-256 of their bytes. Models are reference counted: the runner
// holds one reference per model it still hands out.
type modelStore struct {
	mu     sync.Mutex
	models map[string]*storedModel
}

func newModelStore() *modelStore {
	return &modelStore{models: make(map[string]*storedModel)}
}

// put encodes w and stores it, returning its id. Each put takes a reference
// that release gives back.
func (s *modelStore) put(w *model.Weights) (*storedModel, error) {
	b, err := model.MarshalSafetensors(w, nil)
	if err != nil {
		return nil, fmt.Errorf("encoding global model: %w", err)
	}
	sum := sha256.Sum256(b)
	id := hex.EncodeToString(sum[:])
	s.mu.Lock()
	defer s.mu.Unlock()
	if m, ok := s.models[id]; ok {
		m.refs++
		return m, nil
	}
	m := &storedModel{id: id, data: b, sum: sum, refs: 1}
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
