package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/cohortfl/cohort/job"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
)

// jobRecord is what the coordinator keeps of a job in its state directory:
// enough to list it after a restart and to run it again if it never
// started.
type jobRecord struct {
	Job  json.RawMessage `json:"job"`            // pb.Job as protojson
	YAML string          `json:"yaml,omitempty"` // the job file as submitted
}

// jobStore persists job records as one JSON file per job under dir/jobs,
// each written atomically (temporary file, fsync, rename).
type jobStore struct {
	dir string
}

func newJobStore(stateDir string) (*jobStore, error) {
	dir := filepath.Join(stateDir, "jobs")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("coordinator state directory %s: %w; set state_dir to a writable folder", stateDir, err)
	}
	return &jobStore{dir: dir}, nil
}

func (s *jobStore) save(info *pb.Job, src []byte) error {
	js, err := protojson.Marshal(info)
	if err != nil {
		return fmt.Errorf("encoding job %s: %w", info.GetJobId(), err)
	}
	b, err := json.Marshal(jobRecord{Job: js, YAML: string(src)})
	if err != nil {
		return fmt.Errorf("encoding job %s: %w", info.GetJobId(), err)
	}
	path := filepath.Join(s.dir, info.GetJobId()+".json")
	tmp, err := os.CreateTemp(s.dir, ".job-*")
	if err != nil {
		return fmt.Errorf("saving job %s: %w", info.GetJobId(), err)
	}
	_, werr := tmp.Write(b)
	if werr == nil {
		werr = tmp.Sync()
	}
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp.Name(), path)
	}
	if werr != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("saving job %s to %s: %w", info.GetJobId(), s.dir, werr)
	}
	return nil
}

// savedJob is a job record as loaded.
type savedJob struct {
	info *pb.Job
	src  []byte
}

// load reads every job record, oldest first. A record that cannot be read
// is reported with its file name and skipped: one bad file does not hide
// the others.
func (s *jobStore) load() ([]savedJob, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("reading job state %s: %w", s.dir, err)
	}
	var jobs []savedJob
	var errs []error
	for _, e := range ents {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".json") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		path := filepath.Join(s.dir, e.Name())
		b, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var rec jobRecord
		info := &pb.Job{}
		if err := json.Unmarshal(b, &rec); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w (move the file away to start without it)", path, err))
			continue
		}
		if err := protojson.Unmarshal(rec.Job, info); err != nil || info.GetJobId() == "" {
			errs = append(errs, fmt.Errorf("%s: not a job record (%v); move the file away to start without it", path, err))
			continue
		}
		jobs = append(jobs, savedJob{info: info, src: []byte(rec.YAML)})
	}
	sort.SliceStable(jobs, func(a, b int) bool { return jobs[a].info.GetCreatedUnixMs() < jobs[b].info.GetCreatedUnixMs() })
	return jobs, errors.Join(errs...)
}

// restoreJobs brings back the jobs of an earlier run of this coordinator:
// ended jobs as they ended, queued jobs queued again, and jobs that were
// running marked failed with the reason (resuming them needs the HA state
// of server/ha). Nothing silently vanishes.
func (c *Coordinator) restoreJobs() error {
	saved, loadErr := c.store.load()
	if loadErr != nil {
		c.log.Error("job_state_unreadable", "err", loadErr)
	}
	now := time.Now()
	for _, sj := range saved {
		info := sj.info
		j := &jobRun{id: info.GetJobId(), src: sj.src, info: info, changed: make(chan struct{}), persist: c.persistFunc()}
		switch {
		case terminal(info.GetState()):
			j.events = []*pb.JobEvent{{JobId: j.id, Kind: "job_finished", State: info.GetState(), UnixMs: now.UnixMilli(), Message: "restored: " + stateWord(info.GetState())}}
		case info.GetState() == pb.JobState_JOB_STATE_QUEUED && len(sj.src) > 0:
			spec, err := job.Parse(sj.src)
			if err != nil {
				c.failRestored(j, fmt.Sprintf("the job file no longer parses after a coordinator restart: %v", err))
				break
			}
			j.spec = spec
			select {
			case c.jobs.queued <- j:
				j.emit(&pb.JobEvent{Kind: "job_queued", Message: "queued again after a coordinator restart"}, nil)
			default:
				c.failRestored(j, "the queue was full when the coordinator restarted; resubmit the job")
			}
		default:
			c.failRestored(j, fmt.Sprintf("the coordinator restarted at %s while the job was %s (arm %s, round %d of %d); resubmit it with `cohort submit` (resuming a job needs a coordinator with HA state)",
				now.UTC().Format(time.RFC3339), stateWord(info.GetState()), info.GetArm(), info.GetRound(), info.GetRounds()))
		}
		c.jobs.mu.Lock()
		c.jobs.jobs[j.id] = j
		c.jobs.mu.Unlock()
		c.log.Info("job_restored", "job", j.id, "state", j.snapshot().GetState().String())
	}
	return nil
}

func (c *Coordinator) failRestored(j *jobRun, reason string) {
	c.log.Warn("job_failed_on_restart", "job", j.id, "reason", reason)
	j.emit(&pb.JobEvent{Kind: "job_finished", Message: reason}, func(info *pb.Job) {
		info.State = pb.JobState_JOB_STATE_FAILED
		info.Error = reason
	})
}

// persistFunc returns what a job calls to save itself, or nil without a
// state directory.
func (c *Coordinator) persistFunc() func(*pb.Job, []byte) {
	if c.store == nil {
		return nil
	}
	return func(info *pb.Job, src []byte) {
		if err := c.store.save(info, src); err != nil {
			c.log.Error("job_state_save_failed", "job", info.GetJobId(), "err", err)
		}
	}
}

func stateWord(s pb.JobState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "JOB_STATE_"))
}
