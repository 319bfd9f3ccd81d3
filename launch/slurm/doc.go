// Package slurm starts Cohort's site agents on a Slurm cluster: [Script]
// renders an sbatch script that runs one site agent per task of a job
// array, each from its own startup kit, and a [Client] submits it, reads
// its state and cancels it through sbatch, squeue, sacct and scancel.
//
// The agent is started with exec, so the SIGTERM that scancel (or the end of
// the job's time limit) sends reaches it and it drains. The package uses the
// standard library only; the commands run through [Client.Run], which tests
// replace to cover Slurm's refusals without a cluster.
package slurm
