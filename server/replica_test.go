package server

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/cohortfl/cohort/job"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/server/ha"
)

// stuckReplica is an in-memory node whose job-status and site-registry
// proposals block until release is closed.
type stuckReplica struct {
	*ha.Node
	release chan struct{}
	entered chan string // the proposal that blocked
}

func (r *stuckReplica) block(ctx context.Context, what string) error {
	select {
	case r.entered <- what:
	default:
	}
	select {
	case <-r.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *stuckReplica) SetJobStatus(ctx context.Context, id string, s ha.JobStatus, reason string) error {
	if err := r.block(ctx, "status"); err != nil {
		return err
	}
	return r.Node.SetJobStatus(ctx, id, s, reason)
}

func (r *stuckReplica) RegisterSite(ctx context.Context, name string, caps []byte) error {
	if err := r.block(ctx, "site"); err != nil {
		return err
	}
	return r.Node.RegisterSite(ctx, name, caps)
}

// TestReadersNeverWaitOnAProposal: while a job's status proposal is stuck,
// ListJobs, GetJob and ClusterStatus answer, and Join answers while the
// site registry's proposal is stuck.
func TestReadersNeverWaitOnAProposal(t *testing.T) {
	ctx := context.Background()
	node, err := ha.NewInMemory(ctx, ha.Config{ID: "n", Peers: []ha.Peer{{ID: "n"}}, DigestsOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	rep := &stuckReplica{Node: node, release: make(chan struct{}), entered: make(chan string, 1)}
	coord, err := New(Config{}, Deps{Replica: rep, Models: &fakeModels{}, OpenTracker: noTrackerOpener})
	if err != nil {
		t.Fatal(err)
	}
	defer coord.Close()
	coord.leading.Store(true) // as lead() leaves it, without running the queue
	info, err := coord.Submit(ctx, []byte(testJobYAML))
	if err != nil {
		t.Fatal(err)
	}
	j, _ := coord.jobs.get(info.GetJobId())
	done := make(chan struct{})
	go func() { // the job starts: its running status is proposed, and sticks
		defer close(done)
		j.emit(&pb.JobEvent{Kind: "job_started"}, func(i *pb.Job) { i.State = pb.JobState_JOB_STATE_RUNNING })
	}()
	if got := <-rep.entered; got != "status" {
		t.Fatalf("stuck proposal = %s, want status", got)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second) // a bound for a broken build, not a measure
	defer cancel()
	list, err := coord.ListJobs(cctx, &pb.ListJobsRequest{})
	if err != nil || len(list.GetJobs()) != 1 || list.GetJobs()[0].GetState() != pb.JobState_JOB_STATE_RUNNING {
		t.Errorf("ListJobs while a proposal is stuck = %v, %v; want the one job, running", list, err)
	}
	got, err := coord.GetJob(cctx, &pb.GetJobRequest{JobId: info.GetJobId()})
	if err != nil || got.GetJob().GetJobId() != info.GetJobId() {
		t.Errorf("GetJob while a proposal is stuck = %v, %v", got, err)
	}
	if st, err := coord.ClusterStatus(cctx, &pb.ClusterStatusRequest{}); err != nil || st.GetJobsRunning() != 1 {
		t.Errorf("ClusterStatus while a proposal is stuck = %v, %v; want 1 job running", st, err)
	}
	select {
	case <-done:
		t.Fatal("the status proposal returned before it was released")
	default:
	}
	if _, err := coord.Join(cctx, &pb.JoinRequest{SiteName: "kit"}); err != nil {
		t.Errorf("Join while the status proposal is stuck = %v", err)
	}
	close(rep.release)
	<-done
	coord.registryIdle()
	if hj, err := node.FSM().Job(info.GetJobId()); err != nil || hj.Status != ha.StatusRunning {
		t.Errorf("replicated job = %+v, %v; want running once released", hj, err)
	}
	if sites := node.FSM().Sites(); len(sites) != 1 || sites[0].Name != "kit" {
		t.Errorf("registered sites = %v, want kit", sites)
	}
}

func noTrackerOpener(context.Context, string) (Tracker, func(context.Context) error, error) {
	return nil, nil, nil
}

const testJobYAML = `
name: test
seed: 1
data: {dataset: fashion-mnist, path: /nonexistent}
model: {kind: logreg}
sites: {count: 3, min_per_round: 2}
rounds: 5
arms:
  - {name: centralized, centralized: {epochs: 4}}
  - {name: fedavg, strategy: fedavg}
`

// TestRestoreAfterFailover: a job rebuilt from the replicated state shows
// the arm, round of rounds and accuracy it had, and its events list every
// committed round; a state without the new fields (an older snapshot)
// still gives the last rounds.
func TestRestoreAfterFailover(t *testing.T) {
	spec, err := job.Parse([]byte(testJobYAML))
	if err != nil {
		t.Fatal(err)
	}
	const s = int64(1e9)
	commit := func(arm string, r int, acc, energy float64, rounds int) ha.Commit {
		return ha.Commit{Round: r, At: int64(r) * s, Totals: map[string]float64{totalAccuracy: acc, totalEnergy: energy, totalRounds: float64(rounds)}}
	}
	hj := ha.Job{ID: "j", Status: ha.StatusSucceeded, SubmittedAt: 1 * s, StartedAt: 2 * s, UpdatedAt: 60 * s,
		Arms: map[string][]ha.Commit{
			"centralized": {commit("centralized", 3, 0.7, 30, 4), commit("centralized", 4, 0.8, 40, 4)},
			"fedavg":      {commit("fedavg", 4, 0.55, 14, 5), commit("fedavg", 5, 0.6, 20, 5)},
		}}
	for r := 1; r <= 4; r++ {
		c := commit("centralized", r, 0.5+0.1*float64(r-1), 10*float64(r), 4)
		hj.History = append(hj.History, ha.RoundRecord{Arm: "centralized", Round: r, At: c.At, Totals: c.Totals})
	}
	for r := 1; r <= 5; r++ {
		c := commit("fedavg", r, 0.4+0.05*float64(r-1), 4*float64(r), 5)
		hj.History = append(hj.History, ha.RoundRecord{Arm: "fedavg", Round: r, At: c.At + 10*s, Totals: c.Totals})
	}
	info := &pb.Job{}
	restoreProgress(info, spec, hj)
	want := &pb.Job{Arm: "fedavg", Round: 5, Rounds: 5, Accuracy: 0.6}
	if d := cmp.Diff(want, info, protocmp.Transform()); d != "" {
		t.Errorf("restored progress (-want +got):\n%s", d)
	}
	evs := history(hj, spec)
	type row struct {
		Kind          string
		Arm           string
		Round, Rounds int32
		Energy        float64
	}
	var got []row
	for _, e := range evs {
		got = append(got, row{e.GetKind(), e.GetArm(), e.GetRound(), e.GetRounds(), e.GetMetrics()["energy_joules"]})
	}
	wantRows := []row{{Kind: "job_queued"}, {Kind: "job_started"},
		{"round_committed", "centralized", 1, 4, 10}, {"round_committed", "centralized", 2, 4, 10}, {"round_committed", "centralized", 3, 4, 10}, {"round_committed", "centralized", 4, 4, 10},
		{"round_committed", "fedavg", 1, 5, 4}, {"round_committed", "fedavg", 2, 5, 4}, {"round_committed", "fedavg", 3, 5, 4}, {"round_committed", "fedavg", 4, 5, 4}, {"round_committed", "fedavg", 5, 5, 4},
		{Kind: "job_finished"}}
	if d := cmp.Diff(wantRows, got); d != "" {
		t.Errorf("rebuilt events (-want +got):\n%s", d)
	}
	if acc, want := evs[len(evs)-2].GetMetrics()["test_accuracy"], hj.History[8].Totals[totalAccuracy]; acc != want || acc < 0.59 {
		t.Errorf("round 5's test_accuracy = %v, want %v", acc, want)
	}
	if st := evs[len(evs)-1].GetState(); st != pb.JobState_JOB_STATE_SUCCEEDED {
		t.Errorf("last event's state = %v, want SUCCEEDED", st)
	}

	// An older version's state: no history, no StartedAt, no rounds total.
	old := hj
	old.History, old.StartedAt = nil, 0
	for arm, cs := range old.Arms {
		var stripped []ha.Commit
		for _, c := range cs {
			c.Totals = map[string]float64{totalAccuracy: c.Totals[totalAccuracy]}
			stripped = append(stripped, c)
		}
		old.Arms = map[string][]ha.Commit{arm: stripped, otherArm(arm): old.Arms[otherArm(arm)]}
	}
	info = &pb.Job{}
	restoreProgress(info, spec, old)
	if info.GetArm() != "fedavg" || info.GetRound() != 5 || info.GetRounds() != 5 || info.GetAccuracy() != 0.6 {
		t.Errorf("progress from an older state = %v, want fedavg 5/5 accuracy 0.6", info)
	}
	var rounds int
	for _, e := range history(old, spec) {
		if e.GetKind() == "round_committed" {
			rounds++
		}
	}
	if rounds != 4 {
		t.Errorf("rounds rebuilt from an older state = %d, want 4 (each arm's last two)", rounds)
	}
}

func otherArm(a string) string {
	if a == "fedavg" {
		return "centralized"
	}
	return "fedavg"
}
