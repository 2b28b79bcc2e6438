//go:build unix && !linux

package chserver

import "syscall"

// sysProcAttr puts the server in its own process group so that Stop reaches its
// children too. Outside Linux there is no parent-death signal: a crashed parent
// leaves the server running.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
