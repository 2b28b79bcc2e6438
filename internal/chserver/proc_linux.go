package chserver

import "syscall"

// sysProcAttr puts the server in its own process group (so that Stop reaches its
// children too) and has the kernel kill it when the process that started it dies,
// so that a crashed test or demo leaves no server behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
