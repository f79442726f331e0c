//go:build !unix

package hook

import "os/exec"

// killGroup kills only the command itself where process groups are not
// available; exec.Cmd's default Cancel does that.
func killGroup(cmd *exec.Cmd) {}
