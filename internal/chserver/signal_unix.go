//go:build unix

package chserver

import (
	"os"
	"syscall"
)

// terminate asks the server's process group to shut down.
func terminate(p *os.Process) error { return syscall.Kill(-p.Pid, syscall.SIGTERM) }

// kill kills the server's process group.
func kill(p *os.Process) error { return syscall.Kill(-p.Pid, syscall.SIGKILL) }
