package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cohortfl/cohort/client/leader"
	"github.com/cohortfl/cohort/deploy"
	"github.com/cohortfl/cohort/internal/federation"
	"github.com/cohortfl/cohort/job"
	"github.com/cohortfl/cohort/model"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
)

// EnvAdmin names the environment variable of the admin kit's config, read
// when -c is not given.
const EnvAdmin = "COHORT_ADMIN"

// adminFlags are the flags every Jobs API command shares.
type adminFlags struct {
	fs     *flag.FlagSet
	config *string
	stdout io.Writer // where --help prints
}

func newAdminFlags(name, usage string, stdout, stderr io.Writer) *adminFlags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	def := os.Getenv(EnvAdmin)
	if def == "" {
		def = "admin.yaml"
	}
	a := &adminFlags{fs: fs, stdout: stdout, config: fs.String("c", def, "the admin kit's config (default $"+EnvAdmin+", else ./admin.yaml)")}
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: cohort "+usage)
		fs.PrintDefaults()
	}
	return a
}

// leaderConn is an admin command's Jobs API on the coordinator that
// leads the admin kit's cluster, found through the leader dialer: every
// coordinator is asked at once, so one that is down costs nothing while
// another leads.
type leaderConn struct {
	pb.JobsServiceClient
	d      *leader.Dialer
	config string
	leader string // its address
}

// Admin commands' patience with a cluster: how long one coordinator has to
// answer (one that is restarting gets that long to come up), and how long
// a command waits for an election to name a leader.
const (
	adminAttemptTimeout = 10 * time.Second
	adminPatience       = 15 * time.Second
)

// jobsClient connects to the coordinator of the admin kit that leads and
// returns its Jobs API; done closes it.
func (a *adminFlags) jobsClient(ctx context.Context) (*leaderConn, func(), error) {
	cfg, err := deploy.LoadAdminConfig(*a.config)
	if err != nil {
		return nil, nil, err
	}
	dial, err := dialOptions(cfg.TLS)
	if err != nil {
		return nil, nil, err
	}
	d, err := leader.New(leader.Config{
		Targets: cfg.Coordinators, DialOptions: dial,
		AttemptTimeout: adminAttemptTimeout, Patience: adminPatience, FailFast: true,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", *a.config, err)
	}
	c := &leaderConn{d: d, config: *a.config}
	if err := c.reconnect(ctx); err != nil {
		d.Close()
		return nil, nil, err
	}
	return c, func() { d.Close() }, nil
}

// reconnect finds the leader (again, after a failover) and points c's
// Jobs API at it.
func (c *leaderConn) reconnect(ctx context.Context) error {
	res, err := leader.Find(ctx, c.d, listJobsProbe)
	if err != nil {
		if leader.IsFinal(err) {
			return fmt.Errorf("coordinator %s refused this kit: %s", res.Target, statusMessage(err))
		}
		if leader.Electing(err) {
			return fmt.Errorf("no coordinator of %s leads: an election takes a few seconds; if this lasts, check that a majority of them run and reach each other (cohort cluster status -c %s): %w", c.config, c.config, err)
		}
		return fmt.Errorf("no coordinator of %s answered; check that one runs and that coordinators: lists its address: %w", c.config, err)
	}
	c.JobsServiceClient = pb.NewJobsServiceClient(res.Conn)
	c.leader = res.Target
	return nil
}

// statusMessage is the message of the gRPC status err holds (through
// wrapping), or err's text when it holds none.
func statusMessage(err error) string {
	var gs interface{ GRPCStatus() *status.Status }
	if errors.As(err, &gs) {
		return gs.GRPCStatus().Message()
	}
	return err.Error()
}

// listJobsProbe asks one coordinator whether it leads: followers refuse
// ListJobs with NOT_LEADER. A refused kit is final.
func listJobsProbe(ctx context.Context, cc *grpc.ClientConn) (struct{}, error) {
	_, err := pb.NewJobsServiceClient(cc).ListJobs(ctx, &pb.ListJobsRequest{}, grpc.WaitForReady(true))
	if s, ok := status.FromError(err); ok && (s.Code() == codes.PermissionDenied || s.Code() == codes.Unauthenticated) {
		return struct{}{}, leader.Final(err)
	}
	return struct{}{}, err
}

// jobArg parses a command's flags and its job ID, and connects to the
// coordinator that leads.
func (a *adminFlags) jobArg(ctx context.Context, args []string) (string, *leaderConn, func(), error) {
	id, err := a.parseJobID(args)
	if err != nil {
		return "", nil, nil, err
	}
	cli, done, err := a.jobsClient(ctx)
	return id, cli, done, err
}

// parseJobID parses a command's flags and its one argument, a job ID.
func (a *adminFlags) parseJobID(args []string) (string, error) {
	if err := parseFlags(a.fs, args, a.stdout); err != nil {
		return "", err
	}
	if a.fs.NArg() != 1 {
		a.fs.Usage()
		return "", fmt.Errorf("%s takes one job ID; `cohort jobs` lists them", a.fs.Name())
	}
	return a.fs.Arg(0), nil
}

func submitCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	a := newAdminFlags("submit", "submit [-c admin.yaml] [--watch] JOB.yaml", stdout, stderr)
	watch := a.fs.Bool("watch", false, "follow the job's progress until it ends")
	if err := parseFlags(a.fs, args, a.stdout); err != nil {
		return err
	}
	if a.fs.NArg() != 1 {
		a.fs.Usage()
		return fmt.Errorf("submit takes one job file, got %d arguments", a.fs.NArg())
	}
	src, err := os.ReadFile(a.fs.Arg(0))
	if err != nil {
		return fmt.Errorf("reading the job file: %w", err)
	}
	// The file is checked here first, so that its problems are named
	// FILE:LINE:COL as `cohort run` names them; the coordinator checks it
	// again, with what only it knows (its test sets, its limits).
	if _, err := job.ParseFile(a.fs.Arg(0), src); err != nil {
		return err
	}
	cli, done, err := a.jobsClient(ctx)
	if err != nil {
		return err
	}
	defer done()
	if src, err = uploadInitWeights(ctx, cli, a.fs.Arg(0), src, stdout); err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	resp, err := cli.SubmitJob(rctx, &pb.SubmitJobRequest{JobYaml: src})
	cancel()
	if err != nil {
		return fmt.Errorf("submitting %s: %s", a.fs.Arg(0), status.Convert(err).Message())
	}
	id := resp.GetJob().GetJobId()
	fmt.Fprintf(stdout, "job %s submitted (%s); follow it with: cohort status -f %s\n", id, resp.GetJob().GetName(), id)
	if !*watch {
		return nil
	}
	return finalState(a.follow(ctx, cli, id, stdout))
}

// follow prints a job's progress until it ends. When the coordinator
// goes away mid-job (a cluster's leader that failed), it finds the next
// leader through the kit's dialer and follows the job there.
func (a *adminFlags) follow(ctx context.Context, cli *leaderConn, id string, stdout io.Writer) (*pb.Job, error) {
	for failovers := 0; ; failovers++ {
		j, err := federation.WatchJob(ctx, cli, id, stdout, false)
		if err == nil || ctx.Err() != nil || status.Code(err) != codes.Unavailable || failovers == 5 {
			return j, err
		}
		fmt.Fprintf(stdout, "  lost the coordinator (%s); following job %s on the next leader\n", statusMessage(err), id)
		if cerr := cli.reconnect(ctx); cerr != nil {
			return nil, fmt.Errorf("following job %s after losing its coordinator: %w", id, cerr)
		}
	}
}

func finalState(j *pb.Job, err error) error {
	if err != nil {
		return err
	}
	if j.GetState() != pb.JobState_JOB_STATE_SUCCEEDED {
		return fmt.Errorf("job %s %s: %s", j.GetJobId(), stateName(j.GetState()), j.GetError())
	}
	return nil
}

func stateName(s pb.JobState) string { return pb.StateWord(s) }

func jobsCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	a := newAdminFlags("jobs", "jobs [-c admin.yaml]", stdout, stderr)
	if err := parseFlags(a.fs, args, a.stdout); err != nil {
		return err
	}
	cli, done, err := a.jobsClient(ctx)
	if err != nil {
		return err
	}
	defer done()
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := cli.ListJobs(rctx, &pb.ListJobsRequest{})
	if err != nil {
		return fmt.Errorf("listing jobs: %s", status.Convert(err).Message())
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tSTATE\tARM\tROUND\tSITES\tACCURACY\tCREATED")
	for _, j := range resp.GetJobs() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t%d\t%s\t%s\n", j.GetJobId(), j.GetName(), stateName(j.GetState()),
			j.GetArm(), j.GetRound(), j.GetRounds(), j.GetSitesReporting(), jobAccuracy(j, "-"),
			time.UnixMilli(j.GetCreatedUnixMs()).UTC().Format(time.RFC3339))
	}
	return tw.Flush()
}

// jobAccuracy is a job's test accuracy, or none where the coordinator
// has no test set (and the job's accuracy is no measurement).
func jobAccuracy(j *pb.Job, none string) string {
	if j.GetNoTestSet() {
		return none
	}
	return fmt.Sprintf("%.4f", j.GetAccuracy())
}

func statusCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	a := newAdminFlags("status", "status [-c admin.yaml] [-f] JOB_ID", stdout, stderr)
	follow := a.fs.Bool("f", false, "follow the job's progress until it ends")
	id, cli, done, err := a.jobArg(ctx, args)
	if err != nil {
		return err
	}
	defer done()
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	resp, err := cli.GetJob(rctx, &pb.GetJobRequest{JobId: id})
	cancel()
	if err != nil {
		return fmt.Errorf("job %s: %s", id, status.Convert(err).Message())
	}
	j := resp.GetJob()
	fmt.Fprintf(stdout, "job %s (%s): %s\n", j.GetJobId(), j.GetName(), stateName(j.GetState()))
	if j.GetArm() != "" {
		fmt.Fprintf(stdout, "  arm %s, round %d/%d, %d sites reporting, accuracy %s\n", j.GetArm(), j.GetRound(), j.GetRounds(), j.GetSitesReporting(), jobAccuracy(j, "none (no test set on the coordinator)"))
	}
	if j.GetTrackingRunId() != "" {
		fmt.Fprintf(stdout, "  tracking: experiment %s, job run %s\n", j.GetExperimentId(), j.GetTrackingRunId())
	}
	if j.GetError() != "" {
		fmt.Fprintf(stdout, "  error: %s\n", j.GetError())
	}
	if !*follow {
		return nil
	}
	return finalState(a.follow(ctx, cli, j.GetJobId(), stdout))
}

func cancelCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	a := newAdminFlags("cancel", "cancel [-c admin.yaml] [--reason TEXT] JOB_ID", stdout, stderr)
	reason := a.fs.String("reason", "", "why, recorded with the job")
	id, cli, done, err := a.jobArg(ctx, args)
	if err != nil {
		return err
	}
	defer done()
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := cli.CancelJob(rctx, &pb.CancelJobRequest{JobId: id, Reason: *reason})
	if err != nil {
		return fmt.Errorf("cancelling job %s: %s", id, status.Convert(err).Message())
	}
	fmt.Fprintf(stdout, "job %s: %s\n", resp.GetJob().GetJobId(), stateName(resp.GetJob().GetState()))
	return nil
}

func logsCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	a := newAdminFlags("logs", "logs [-c admin.yaml] [-f] JOB_ID", stdout, stderr)
	follow := a.fs.Bool("f", false, "keep printing events until the job ends")
	id, cli, done, err := a.jobArg(ctx, args)
	if err != nil {
		return err
	}
	defer done()
	var cur eventCursor
	for lost := 0; ; {
		err := printEvents(ctx, cli, id, *follow, &cur, stdout)
		if err == nil {
			return nil
		}
		// A failover: the stream breaks (Unavailable), or the old leader
		// says it no longer leads. Go on on the new leader, after the
		// last event printed.
		if !*follow || ctx.Err() != nil || status.Code(err) != codes.Unavailable {
			return fmt.Errorf("job %s: %s", id, status.Convert(err).Message())
		}
		if cur.progressed {
			lost = 0
		}
		if lost++; lost > 5 {
			return fmt.Errorf("job %s: lost the coordinator %d times without a new event: %s", id, lost-1, status.Convert(err).Message())
		}
		fmt.Fprintf(stderr, "lost the coordinator %s (%s); following job %s on the next leader\n", cli.leader, statusMessage(err), id)
		if cerr := cli.reconnect(ctx); cerr != nil {
			return fmt.Errorf("following job %s after losing its coordinator: %w", id, cerr)
		}
		cur.resume()
	}
}

// eventCursor is where `cohort logs` is in a job's events, so that after
// a failover the new leader's replay prints only what is new: events
// older than the last printed one, and the ones printed at its
// millisecond, are skipped until a newer one arrives. (An event the new
// leader stamped earlier than the last printed one, by a clock behind the
// old leader's, is skipped too.)
type eventCursor struct {
	lastMs     int64
	atLast     map[string]bool // lines printed at lastMs
	resuming   bool
	progressed bool // an event was printed since the last resume
}

// resume starts a replay.
func (c *eventCursor) resume() { c.resuming, c.progressed = true, false }

// print writes line, the event of unixMs, unless a resumed stream already
// printed it.
func (c *eventCursor) print(w io.Writer, unixMs int64, line string) {
	if c.resuming {
		if unixMs < c.lastMs || (unixMs == c.lastMs && c.atLast[line]) {
			return
		}
		c.resuming = false
	}
	if unixMs != c.lastMs || c.atLast == nil {
		c.lastMs, c.atLast = unixMs, make(map[string]bool)
	}
	c.atLast[line] = true
	c.progressed = true
	fmt.Fprintln(w, line)
}

// printEvents prints a job's events from cli's coordinator through cur:
// until the job ends with follow, else until no event arrives for a
// moment. It returns nil at the end and the stream's error when it breaks.
func printEvents(ctx context.Context, cli pb.JobsServiceClient, id string, follow bool, cur *eventCursor, stdout io.Writer) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := cli.WatchJob(wctx, &pb.WatchJobRequest{JobId: id})
	if err != nil {
		return err
	}
	// Without -f, print what has happened so far: stop once no event
	// arrives for a moment.
	var idle *time.Timer
	if !follow {
		idle = time.AfterFunc(2*time.Second, cancel)
		defer idle.Stop()
	}
	for {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) || (err != nil && wctx.Err() != nil && ctx.Err() == nil) {
			return nil
		}
		if err != nil {
			return err
		}
		if idle != nil {
			idle.Reset(500 * time.Millisecond)
		}
		line := fmt.Sprintf("%s  %-16s", time.UnixMilli(ev.GetUnixMs()).UTC().Format("2006-01-02T15:04:05.000Z"), ev.GetKind())
		if ev.GetArm() != "" {
			line += fmt.Sprintf(" arm=%s", ev.GetArm())
		}
		if ev.GetRound() > 0 {
			line += fmt.Sprintf(" round=%d/%d", ev.GetRound(), ev.GetRounds())
		}
		if ev.GetSite() != "" {
			line += " site=" + ev.GetSite()
		}
		for _, k := range slices.Sorted(maps.Keys(ev.GetMetrics())) {
			line += fmt.Sprintf(" %s=%.6g", k, ev.GetMetrics()[k])
		}
		if ev.GetMessage() != "" {
			line += "  " + ev.GetMessage()
		}
		cur.print(stdout, ev.GetUnixMs(), line)
	}
}

// uploadInitWeights uploads the file a job's model.init.weights names
// (relative to the job file's folder) and returns the job with the
// weights named by their SHA-256, as the coordinator expects them. A job
// without such a file is returned as is.
func uploadInitWeights(ctx context.Context, cli pb.JobsServiceClient, jobPath string, src []byte, stdout io.Writer) ([]byte, error) {
	spec, err := job.Parse(src)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", jobPath, err)
	}
	in := spec.Model.Init
	if in == nil || in.Weights == "" || strings.HasPrefix(in.Weights, job.WeightsRefPrefix) {
		return src, nil
	}
	path := in.Weights
	if !filepath.IsAbs(path) {
		path = filepath.Join(filepath.Dir(jobPath), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("model.init.weights: %w", err)
	}
	w, _, err := model.UnmarshalSafetensors(b)
	if err != nil {
		return nil, fmt.Errorf("model.init.weights %s: not a safetensors file: %w", path, err)
	}
	if err := w.CheckFinite(); err != nil {
		return nil, fmt.Errorf("model.init.weights %s: %w; initial weights must be finite", path, err)
	}
	sum := sha256.Sum256(b)
	uctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	st, err := cli.UploadWeights(uctx)
	if err != nil {
		return nil, fmt.Errorf("uploading %s: %s", path, status.Convert(err).Message())
	}
	for off, data := range model.Chunks(b, model.ChunkSize) {
		ch := &pb.WeightsChunk{Data: data}
		if off == 0 {
			ch.TotalSize, ch.Sha256 = int64(len(b)), sum[:]
		}
		if err := st.Send(ch); err != nil {
			break // the coordinator answered early; CloseAndRecv has why
		}
	}
	resp, err := st.CloseAndRecv()
	if err != nil {
		return nil, fmt.Errorf("uploading %s: %s", path, status.Convert(err).Message())
	}
	if resp.GetSha256() != hex.EncodeToString(sum[:]) {
		return nil, fmt.Errorf("uploading %s: the coordinator stored sha256 %s, not the file's %x", path, resp.GetSha256(), sum)
	}
	fmt.Fprintf(stdout, "uploaded %s (%d bytes, sha256 %.12s…)\n", path, len(b), resp.GetSha256())
	return job.SetInitWeights(src, job.WeightsRefPrefix+resp.GetSha256())
}
