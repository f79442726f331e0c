//go:build unix

package hook

import (
	"os/exec"
	"syscall"
)

// killGroup runs the command in its own process group and makes a timeout
// kill the whole group, so `sh -c "sleep 60"` does not leave the sleep behind.
func killGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}
