// Package activation takes the listening sockets a service manager hands
// a process at its start — systemd's socket activation (sd_listen_fds(3)):
// the sockets are file descriptors 3, 4, …, LISTEN_FDS says how many,
// LISTEN_FDNAMES names them (colon-separated) and LISTEN_PID, when set,
// names the process they are for. A process that inherits its sockets
// binds nothing itself: it cannot lose its port to another process
// between a test picking a port and the process binding it, and a socket
// kept by the service manager queues connections across a restart.
// [Listeners] returns them by name; [Pass] hands listeners to a child the
// same way (tests, supervisors). Only the standard library.
package activation
