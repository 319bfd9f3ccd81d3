package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cohortfl/cohort/internal/bulk"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/server/blobs"
	"github.com/cohortfl/cohort/server/ha"
)

// blobChunk is the most bytes of a blob per FetchBlob message.
const blobChunk = 1 << 20

// BlobHolder is the node a [BlobServer] has hold blobs: *ha.Node.
type BlobHolder interface {
	// HoldBlob returns once this node's blob store holds blob d of size
	// bytes, fetched from voter from if need be.
	HoldBlob(ctx context.Context, from string, d blobs.Digest, size int64) error
	// ReceiveBlob stores the blob b pushed by voter from as it arrives and
	// commits it against the digest b ends with.
	ReceiveBlob(ctx context.Context, from string, b ha.BlobStream) (blobs.Digest, error)
}

// BlobServer serves BlobService: the coordinators of a cluster fetch
// global models from each other's blob stores through it, and the leader
// asks its followers to hold a model before it commits the model's
// digest. Only coordinator certificates may call it ([Authorizer]). Safe
// for concurrent use.
type BlobServer struct {
	pb.UnimplementedBlobServiceServer
	store  *blobs.Store
	holder BlobHolder
	log    *slog.Logger
}

var _ pb.BlobServiceServer = (*BlobServer)(nil)

// NewBlobServer returns the BlobService of store, holder being this
// coordinator's node; a nil log discards.
func NewBlobServer(store *blobs.Store, holder BlobHolder, log *slog.Logger) *BlobServer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &BlobServer{store: store, holder: holder, log: log}
}

// FetchBlob streams a blob from the store.
func (s *BlobServer) FetchBlob(req *pb.FetchBlobRequest, stream grpc.ServerStreamingServer[pb.BlobChunk]) error {
	d, err := blobs.ParseDigest(req.GetDigest())
	if err != nil {
		return blobStatus(err)
	}
	f, err := s.store.Open(d)
	if err != nil {
		return blobStatus(fmt.Errorf("fetching blob %.12s: %w", d, err))
	}
	defer f.Close()
	ctx := stream.Context()
	for {
		if err := ctx.Err(); err != nil {
			return blobStatus(err)
		}
		// A buffer per message, given back once sent: the codec sends
		// from it after Send returns (internal/bulk).
		buf := chunkBuffers.Get(blobChunk)
		n, err := io.ReadFull(f, *buf)
		if n > 0 {
			*buf = (*buf)[:n]
			if err := stream.SendMsg(bulk.Owned(&pb.BlobChunk{Data: *buf}, *buf, &chunkBuffers)); err != nil {
				return err
			}
		} else {
			chunkBuffers.Put(buf)
		}
		switch {
		case err == io.EOF, errors.Is(err, io.ErrUnexpectedEOF):
			return nil
		case err != nil:
			return blobStatus(fmt.Errorf("reading blob %.12s: %w", d, err))
		}
	}
}

// HoldBlob has this coordinator's node hold a blob.
func (s *BlobServer) HoldBlob(ctx context.Context, req *pb.HoldBlobRequest) (*pb.HoldBlobResponse, error) {
	d, err := blobs.ParseDigest(req.GetDigest())
	if err != nil {
		return nil, blobStatus(err)
	}
	if err := s.holder.HoldBlob(ctx, req.GetFromNode(), d, req.GetSize()); err != nil {
		s.log.Warn("hold_blob_failed", "digest", string(d), "from", req.GetFromNode(), "err", err)
		return nil, blobStatus(err)
	}
	return &pb.HoldBlobResponse{}, nil
}

// PushBlob stores a blob the leader streams while it writes it.
func (s *BlobServer) PushBlob(stream grpc.ClientStreamingServer[pb.PushBlobRequest, pb.PushBlobResponse]) error {
	first, err := stream.Recv()
	if err == io.EOF {
		return status.Error(codes.InvalidArgument, "pushing a blob: the stream ended before its first message: send from_node first")
	}
	if err != nil {
		return blobStatus(err)
	}
	from := first.GetFromNode()
	if from == "" {
		return status.Error(codes.InvalidArgument, "pushing a blob: the first message has no from_node: name the pushing voter")
	}
	r := &pushReader{stream: stream}
	r.take(first)
	d, err := s.holder.ReceiveBlob(stream.Context(), from, r)
	if err != nil {
		s.log.Warn("push_blob_failed", "from", from, "err", err)
		return blobStatus(err)
	}
	return stream.SendAndClose(&pb.PushBlobResponse{Digest: string(d)})
}

// errPushTruncated is returned by a pushReader whose stream ended without
// the digest: the pusher gave up.
var errPushTruncated = errors.New("the push ended before its digest: the leader gave up on it (its write failed, or this follower fell behind) and this follower fetches the blob instead")

// pushReader is a PushBlob stream as an [ha.BlobStream].
type pushReader struct {
	stream grpc.ClientStreamingServer[pb.PushBlobRequest, pb.PushBlobResponse]
	msg    pb.PushBlobRequest // received into again: cur is done with first
	cur    []byte
	digest blobs.Digest
	ended  bool
}

var _ ha.BlobStream = (*pushReader)(nil)

func (r *pushReader) take(m *pb.PushBlobRequest) {
	r.cur = m.GetData()
	if d := m.GetDigest(); d != "" {
		r.digest, r.ended = blobs.Digest(d), true
	}
}

// next receives the next message; io.EOF once the digest has come.
func (r *pushReader) next() error {
	if r.ended {
		return io.EOF
	}
	err := r.stream.RecvMsg(&r.msg)
	if err == io.EOF {
		return fmt.Errorf("receiving a pushed blob: %w", errPushTruncated)
	}
	if err != nil {
		return fmt.Errorf("receiving a pushed blob: %w", err)
	}
	r.take(&r.msg)
	return nil
}

func (r *pushReader) Read(p []byte) (int, error) {
	for len(r.cur) == 0 {
		if err := r.next(); err != nil {
			return 0, err
		}
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

// WriteTo writes each message's data to w as it arrives, uncopied.
func (r *pushReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		if len(r.cur) > 0 {
			n, err := w.Write(r.cur)
			total += int64(n)
			r.cur = nil
			if err != nil {
				return total, err
			}
		}
		if err := r.next(); err == io.EOF {
			return total, nil
		} else if err != nil {
			return total, err
		}
	}
}

// Digest is the digest the last message carried.
func (r *pushReader) Digest() blobs.Digest { return r.digest }

// blobStatus maps the blob store's and the node's errors to gRPC
// statuses; the rest goes through toStatus.
func blobStatus(err error) error {
	switch {
	case errors.Is(err, blobs.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, blobs.ErrBadDigest), errors.Is(err, ha.ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, blobs.ErrDigestMismatch), errors.Is(err, blobs.ErrCorrupt):
		return status.Error(codes.DataLoss, err.Error())
	case errors.Is(err, blobs.ErrNoSpace):
		return status.Error(codes.ResourceExhausted, err.Error())
	}
	return toStatus(err)
}

// BlobClient is the gRPC [ha.BlobTransport]: it calls the BlobService of
// the peers at their gRPC addresses, one connection per address, kept
// until Close. Safe for concurrent use.
type BlobClient struct {
	opts []grpc.DialOption

	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn
	closed bool
}

var (
	_ ha.BlobTransport = (*BlobClient)(nil)
	_ ha.BlobPusher    = (*BlobClient)(nil)
)

// NewBlobClient returns a BlobClient that dials with opts: the
// coordinator's own certificate (transport credentials) with TLS.
func NewBlobClient(opts ...grpc.DialOption) *BlobClient {
	return &BlobClient{opts: opts, conns: map[string]*grpc.ClientConn{}}
}

func (c *BlobClient) client(p ha.Peer) (pb.BlobServiceClient, error) {
	if p.GRPCAddr == "" {
		return nil, fmt.Errorf("peer %s has no gRPC address: give it grpc: in the cluster's peer list", p.ID)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, fmt.Errorf("calling peer %s: blob client closed", p.ID)
	}
	cc, ok := c.conns[p.GRPCAddr]
	if !ok {
		var err error
		cc, err = grpc.NewClient(p.GRPCAddr, append(bulk.DialOptions(), c.opts...)...)
		if err != nil {
			return nil, fmt.Errorf("dialling peer %s at %s: %w", p.ID, p.GRPCAddr, err)
		}
		c.conns[p.GRPCAddr] = cc
	}
	return pb.NewBlobServiceClient(cc), nil
}

// FetchBlob copies blob d from peer from into w.
func (c *BlobClient) FetchBlob(ctx context.Context, from ha.Peer, d blobs.Digest, w io.Writer) error {
	cl, err := c.client(from)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := cl.FetchBlob(ctx, &pb.FetchBlobRequest{Digest: string(d)})
	if err != nil {
		return fetchErr(from, d, err)
	}
	var msg pb.BlobChunk // received into again once w has the last
	for {
		err := stream.RecvMsg(&msg)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fetchErr(from, d, err)
		}
		if _, err := w.Write(msg.GetData()); err != nil {
			return fmt.Errorf("storing blob %.12s fetched from %s: %w", d, from.ID, err)
		}
	}
}

func fetchErr(from ha.Peer, d blobs.Digest, err error) error {
	if status.Code(err) == codes.NotFound {
		return fmt.Errorf("fetching blob %.12s from %s at %s: %v: %w", d, from.ID, from.GRPCAddr, status.Convert(err).Message(), blobs.ErrNotFound)
	}
	return fmt.Errorf("fetching blob %.12s from %s at %s: %w", d, from.ID, from.GRPCAddr, err)
}

// HoldBlob asks peer on to hold blob d, fetching it from peer from.
func (c *BlobClient) HoldBlob(ctx context.Context, on, from ha.Peer, d blobs.Digest, size int64) error {
	cl, err := c.client(on)
	if err != nil {
		return err
	}
	if _, err := cl.HoldBlob(ctx, &pb.HoldBlobRequest{Digest: string(d), Size: size, FromNode: from.ID}); err != nil {
		return fmt.Errorf("asking %s at %s to hold blob %.12s: %w", on.ID, on.GRPCAddr, d, err)
	}
	return nil
}

// PushBlob streams blob b to peer to while peer from writes it.
func (c *BlobClient) PushBlob(ctx context.Context, to, from ha.Peer, b ha.BlobStream) error {
	cl, err := c.client(to)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // a push given up on is cancelled: the callee stores nothing
	stream, err := cl.PushBlob(ctx)
	if err != nil {
		return pushErr(to, err)
	}
	sw := &pushSender{stream: stream}
	if err := stream.Send(&pb.PushBlobRequest{FromNode: from.ID}); err != nil {
		return pushErr(to, sw.status(err))
	}
	if _, err := io.CopyBuffer(sw, b, make([]byte, blobChunk)); err != nil {
		if sw.err != nil {
			return pushErr(to, sw.status(sw.err))
		}
		return fmt.Errorf("pushing a blob to %s: %w", to.ID, err)
	}
	if err := stream.Send(&pb.PushBlobRequest{Digest: string(b.Digest())}); err != nil {
		return pushErr(to, sw.status(err))
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return pushErr(to, err)
	}
	if got := resp.GetDigest(); got != string(b.Digest()) {
		return fmt.Errorf("pushing blob %.12s to %s: it stored %.12s: %w", b.Digest(), to.ID, got, blobs.ErrDigestMismatch)
	}
	return nil
}

// pushSender sends what is written to it as PushBlob messages of at most
// blobChunk bytes, each copied into a buffer of its own (the writer
// reuses p; the codec sends after Send returns); err is the first send's
// failure.
type pushSender struct {
	stream grpc.ClientStreamingClient[pb.PushBlobRequest, pb.PushBlobResponse]
	err    error
}

func (s *pushSender) Write(p []byte) (int, error) {
	for off := 0; off < len(p); off += blobChunk {
		buf := chunkBuffers.Get(min(blobChunk, len(p)-off))
		copy(*buf, p[off:])
		if err := s.stream.SendMsg(bulk.Owned(&pb.PushBlobRequest{Data: *buf}, *buf, &chunkBuffers)); err != nil {
			s.err = err
			return off, err
		}
	}
	return len(p), nil
}

// status returns the callee's status when a send failed with io.EOF (the
// callee ended the stream).
func (s *pushSender) status(err error) error {
	if err == io.EOF {
		if _, rerr := s.stream.CloseAndRecv(); rerr != nil {
			return rerr
		}
	}
	return err
}

func pushErr(to ha.Peer, err error) error {
	return fmt.Errorf("pushing a blob to %s at %s: %w", to.ID, to.GRPCAddr, err)
}

// Close closes the connections.
func (c *BlobClient) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	var errs []error
	for _, cc := range c.conns {
		errs = append(errs, cc.Close())
	}
	c.conns = nil
	return errors.Join(errs...)
}
