package federation

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc"

	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/server"
	"github.com/cohortfl/cohort/tracking"
)

// submitAndWatch submits the job through the Jobs API, prints its events as
// progress lines until it ends, and returns its final status.
func submitAndWatch(ctx context.Context, src []byte, addr string, dial []grpc.DialOption, out io.Writer) (*pb.Job, error) {
	cc, err := grpc.NewClient(addr, dial...)
	if err != nil {
		return nil, fmt.Errorf("connecting to the coordinator: %w", err)
	}
	defer cc.Close()
	jobs := pb.NewJobsServiceClient(cc)
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	resp, err := jobs.SubmitJob(sctx, &pb.SubmitJobRequest{JobYaml: src})
	cancel()
	if err != nil {
		return nil, fmt.Errorf("submitting the job: %w", err)
	}
	id := resp.GetJob().GetJobId()
	fmt.Fprintf(out, "job %s submitted\n", id)
	return WatchJob(ctx, jobs, id, out, true)
}

// WatchJob prints a job's events as progress lines (arm, round i/N, sites
// reporting, accuracy, ETA) until the job ends, and returns its final
// status. If ctx ends first and cancelOnInterrupt is set, it asks the
// coordinator to cancel the job.
func WatchJob(ctx context.Context, jobs pb.JobsServiceClient, id string, out io.Writer, cancelOnInterrupt bool) (*pb.Job, error) {
	stream, err := jobs.WatchJob(ctx, &pb.WatchJobRequest{JobId: id})
	if err != nil {
		return nil, fmt.Errorf("watching job %s: %w", id, err)
	}
	p := &printer{out: out, started: time.Now()}
	for {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if ctx.Err() != nil {
				if cancelOnInterrupt {
					// Interrupted: ask the coordinator to stop the job and say so.
					cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
					_, _ = jobs.CancelJob(cctx, &pb.CancelJobRequest{JobId: id, Reason: "interrupted"})
					cancel()
				}
				return nil, fmt.Errorf("job %s interrupted: %w", id, ctx.Err())
			}
			return nil, fmt.Errorf("watching job %s: %w", id, err)
		}
		p.event(ev)
	}
	gctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	got, err := jobs.GetJob(gctx, &pb.GetJobRequest{JobId: id})
	if err != nil {
		return nil, fmt.Errorf("reading job %s: %w", id, err)
	}
	return got.GetJob(), nil
}

// printer turns job events into progress lines.
type printer struct {
	out      io.Writer
	started  time.Time
	armStart time.Time
}

func (p *printer) event(ev *pb.JobEvent) {
	m := ev.GetMetrics()
	switch ev.GetKind() {
	case "arm_started":
		p.armStart = time.Now()
		fmt.Fprintf(p.out, "arm %s: %d %s\n", ev.GetArm(), ev.GetRounds(), unit(ev))
	case "round_committed":
		elapsed := time.Since(p.armStart)
		eta := ""
		if r := ev.GetRound(); r > 0 && ev.GetRounds() > r {
			left := time.Duration(float64(elapsed) / float64(r) * float64(ev.GetRounds()-r))
			eta = fmt.Sprintf("  eta %s", left.Round(time.Second))
		}
		acc := roundAccuracy(m)
		fmt.Fprintf(p.out, "  %s %3d/%d  sites %d  %s  %5.1fs%s\n",
			ev.GetArm(), ev.GetRound(), ev.GetRounds(), int(m[tracking.MetricSites]), acc, m[tracking.MetricRoundSeconds], eta)
	case "job_queued":
		if ev.GetMetrics()[server.MetricResumed] > 0 {
			fmt.Fprintf(p.out, "  %s\n", ev.GetMessage()) // a new leader took the job over
		}
	case "site_failed", "site_screened", "virtual_reassigned", "round_failed", "waiting", "job_finished", "job_interrupted", "tracking_incomplete":
		fmt.Fprintf(p.out, "  %s\n", ev.GetMessage())
	case "arm_finished":
		fmt.Fprintf(p.out, "arm %s done in %.1fs: %s\n", ev.GetArm(), m[tracking.MetricWallSeconds], finalAccuracy(m))
	case "model_registered":
		fmt.Fprintf(p.out, "  %s's model registered as %s\n", ev.GetArm(), ev.GetMessage())
	case "model_alias", "model_registration_failed":
		fmt.Fprintf(p.out, "  %s\n", ev.GetMessage())
	}
}

// roundAccuracy describes a committed round's accuracy: the coordinator's
// test set's where it evaluated, else the sites' federated evaluation of
// the model they received, else none.
func roundAccuracy(m map[string]float64) string {
	if a, ok := m[tracking.MetricTestAccuracy]; ok {
		return fmt.Sprintf("acc %.4f  loss %.4f", a, m[tracking.MetricTestLoss])
	}
	if a, ok := m[tracking.MetricFederatedAccuracy]; ok {
		return fmt.Sprintf("federated acc %.4f", a)
	}
	return "no accuracy"
}

// finalAccuracy describes an arm's final accuracy (arm_finished), saying
// so where the coordinator has no test set rather than printing 0.
func finalAccuracy(m map[string]float64) string {
	if a, ok := m[tracking.MetricTestAccuracy]; ok {
		return fmt.Sprintf("accuracy %.4f", a)
	}
	if a, ok := m[tracking.MetricFederatedAccuracy]; ok {
		return fmt.Sprintf("no test set on the coordinator; federated accuracy %.4f", a)
	}
	return "no test set on the coordinator and no federated accuracy"
}

// unit is what an arm's rounds are: epochs for a centralized arm.
func unit(ev *pb.JobEvent) string {
	if ev.GetMetrics()[server.MetricCentralized] > 0 {
		return "epochs"
	}
	return "rounds"
}
