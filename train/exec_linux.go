package train

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"syscall"
	"unsafe"
)

// waitExited blocks until process pid has exited, without reaping it
// (waitid with WNOWAIT): while it is a zombie its pid, and so its process
// group's id, cannot be reused, and the group can be killed safely. It
// reports false if it could not wait; the caller then reaps first.
func waitExited(pid int) bool {
	const (
		pPID    = 1          // P_PID
		wExited = 0x4        // WEXITED
		wNoWait = 0x01000000 // WNOWAIT
	)
	var info [128]byte // siginfo_t
	for {
		_, _, errno := syscall.Syscall6(syscall.SYS_WAITID, pPID, uintptr(pid), uintptr(unsafe.Pointer(&info[0])), wExited|wNoWait, 0, 0)
		switch errno {
		case 0:
			return true
		case syscall.EINTR:
			continue
		}
		return false
	}
}

// procCPUSeconds returns the user + system CPU time of process pid (all
// its threads, and its waited-for children) from /proc.
func procCPUSeconds(pid int) (float64, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	// After the command: state (0), …, utime (11), stime (12), cutime
	// (13), cstime (14), in clock ticks (100 a second on Linux).
	if len(f) < 15 {
		return 0, false
	}
	var ticks float64
	for _, s := range f[11:15] {
		n, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return 0, false
		}
		ticks += n
	}
	return ticks / 100, true
}
