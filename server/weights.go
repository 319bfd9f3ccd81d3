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

// UploadWeights implements JobsService.UploadWeights: it assembles a
// safetensors file of at most Config.MaxInitBytes, checks its SHA-256, that
// it decodes and that every value is finite, and keeps it in Deps.Weights.
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
	asm, err := model.NewAssembler(size)
	if err != nil {
		return toStatus(badInput("upload weights: %v", err))
	}
	for m := first; ; {
		if len(m.GetData()) > 4*model.ChunkSize {
			return toStatus(badInput("upload weights: a chunk of %d bytes; send chunks of at most %d", len(m.GetData()), model.ChunkSize))
		}
		if err := asm.Write(m.GetData()); err != nil {
			return toStatus(badInput("upload weights: %v", err))
		}
		m, err = stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return toStatus(fmt.Errorf("upload weights: receiving chunks: %w", err))
		}
	}
	b, err := asm.Finish(sum)
	if err != nil {
		return toStatus(badInput("upload weights: %v", err))
	}
	w, _, err := model.UnmarshalSafetensors(b)
	if err != nil {
		return toStatus(badInput("upload weights: not a safetensors file: %v; save the initial weights with safetensors (e.g. safetensors.torch.save_file(model.state_dict(), path))", err))
	}
	if err := w.CheckFinite(); err != nil {
		return toStatus(badInput("upload weights: %v; initial weights must be finite", err))
	}
	digest := hex.EncodeToString(sum)
	if err := c.deps.Weights.Put(digest, b); err != nil {
		return toStatus(fmt.Errorf("upload weights: storing: %w", err))
	}
	c.log.Info("weights_uploaded", "sha256", digest, "bytes", len(b), "tensors", len(w.Tensors))
	return stream.SendAndClose(&pb.UploadWeightsResponse{Sha256: digest})
}
