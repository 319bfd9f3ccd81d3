package server

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"

	"github.com/cohortfl/cohort/model"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
)

// UploadWeights implements JobsService.UploadWeights: it checks a
// safetensors file of at most Config.MaxInitBytes as it arrives (that it
// decodes, that every value is finite, then its SHA-256) and writes it to
// Deps.Weights on the way, which keeps it once it checks. It holds a chunk
// of the file at a time, whatever the file's size.
func (c *Coordinator) UploadWeights(stream grpc.ClientStreamingServer[pb.WeightsChunk, pb.UploadWeightsResponse]) error {
	if err := c.limitAdmin(stream.Context()); err != nil {
		return err
	}
	if err := c.notLeader(); err != nil {
		return err
	}
	if c.deps.Weights == nil {
		return toStatus(badInput("upload weights: this coordinator keeps no uploaded weights; use model.init: {site: NAME}"))
	}
	first, err := stream.Recv()
	if err != nil {
		return toStatus(fmt.Errorf("upload weights: reading the first chunk: %w", err))
	}
	size := first.GetTotalSize()
	if size <= 0 || size > c.cfg.MaxInitBytes {
		return toStatus(badInput("upload weights: declared size %d bytes is outside 1..%d", size, c.cfg.MaxInitBytes))
	}
	sum := first.GetSha256()
	if len(sum) != 32 {
		return toStatus(badInput("upload weights: the first chunk must carry the file's SHA-256 (32 bytes, got %d)", len(sum)))
	}
	// Errors of the chunks' receiving and of the store's writing, told
	// apart from the file's own.
	var recvErr, badChunk, storeErr error
	var m pb.WeightsChunk // received into again: the reader keeps no chunk past the next
	pending := first
	r, err := model.NewChunkReader(size, func() ([]byte, error) {
		if pending == nil {
			if err := stream.RecvMsg(&m); err != nil {
				if !errors.Is(err, io.EOF) {
					recvErr = err
				}
				return nil, err
			}
			pending = &m
		}
		data := pending.GetData()
		pending = nil
		if len(data) > 4*model.ChunkSize {
			badChunk = badInput("upload weights: a chunk of %d bytes; send chunks of at most %d", len(data), model.ChunkSize)
			return nil, badChunk
		}
		return data, nil
	})
	if err != nil {
		return toStatus(badInput("upload weights: %v", err))
	}
	up, err := c.deps.Weights.Create()
	if err != nil {
		return toStatus(fmt.Errorf("upload weights: storing: %w", err))
	}
	defer up.Abort()
	var shell *model.Weights
	// The limit is the upload's, not the declared size: a file cut short
	// then reads as truncated (its header announces more than came).
	_, err = model.ScanSafetensors(io.TeeReader(r, storeWriter{up, &storeErr}), c.cfg.MaxInitBytes,
		func(w *model.Weights) error { shell = w; return nil },
		func(t, off int, vals []float32) error {
			return model.CheckFiniteBlock(shell.Tensors[t].Name, off, vals)
		})
	if err == nil {
		err = r.Finish(sum)
	}
	switch {
	case recvErr != nil:
		return toStatus(fmt.Errorf("upload weights: receiving chunks: %w", recvErr))
	case badChunk != nil:
		return toStatus(badChunk)
	case storeErr != nil:
		return toStatus(fmt.Errorf("upload weights: storing: %w", storeErr))
	case errors.Is(err, model.ErrNotFinite):
		return toStatus(badInput("upload weights: %v; initial weights must be finite", err))
	case errors.Is(err, model.ErrChecksum), errors.Is(err, model.ErrTruncated), errors.Is(err, model.ErrOverflow), errors.Is(err, model.ErrTooLarge):
		return toStatus(badInput("upload weights: %v", err))
	case err != nil:
		return toStatus(badInput("upload weights: not a safetensors file: %v; save the initial weights with safetensors (e.g. safetensors.torch.save_file(model.state_dict(), path))", err))
	}
	digest := hex.EncodeToString(sum)
	if err := up.Commit(digest); err != nil {
		return toStatus(fmt.Errorf("upload weights: storing: %w", err))
	}
	c.log.Info("weights_uploaded", "sha256", digest, "bytes", size, "tensors", len(shell.Tensors))
	return stream.SendAndClose(&pb.UploadWeightsResponse{Sha256: digest})
}

// storeWriter writes to an upload's store, keeping the first error in
// err: a failure of the store's (a full disk), not of the file.
type storeWriter struct {
	w   io.Writer
	err *error
}

func (s storeWriter) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	if err != nil && *s.err == nil {
		*s.err = err
	}
	return n, err
}
