/**
 * The service file that starts `bits agent` at login: a systemd user unit on
 * Linux, a launchd agent plist on macOS. Pure: the caller writes it.
 */
import os from 'node:os';
import path from 'node:path';
import { UsageError } from '../errors.js';

export interface ServiceFile {
  path: string;
  content: string;
  /** The command that enables it. */
  enable: string;
}

export interface ServiceInputs {
  node: string;
  bin: string;
  /** BITS_HOME to serve, when set. */
  home?: string;
  userHome?: string;
}

export const LAUNCHD_LABEL = 'org.bits.agent';

/** systemd quotes arguments with spaces in double quotes; backslash and % need escaping. */
function systemdArg(s: string): string {
  const e = s.replace(/\\/g, '\\\\').replace(/%/g, '%%').replace(/"/g, '\\"');
  return /[\s"]/.test(s) ? `"${e}"` : e;
}

function xml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

export function serviceFile(platform: string, inp: ServiceInputs): ServiceFile {
  const userHome = inp.userHome ?? os.homedir();
  if (platform === 'linux') {
    const env = inp.home ? `Environment=${systemdArg(`BITS_HOME=${path.resolve(inp.home)}`)}\n` : '';
    return {
      path: path.join(userHome, '.config', 'systemd', 'user', 'bits-agent.service'),
      enable: 'systemctl --user daemon-reload && systemctl --user enable --now bits-agent.service',
      content: `[Unit]
Description=bits agent: background BITS transfers
After=network-online.target

[Service]
Type=simple
ExecStart=${systemdArg(inp.node)} ${systemdArg(inp.bin)} agent
${env}Restart=on-failure
RestartSec=30

[Install]
WantedBy=default.target
`,
    };
  }
  if (platform === 'darwin') {
    const env = inp.home
      ? `  <key>EnvironmentVariables</key>
  <dict>
    <key>BITS_HOME</key>
    <string>${xml(path.resolve(inp.home))}</string>
  </dict>
`
      : '';
    return {
      path: path.join(userHome, 'Library', 'LaunchAgents', `${LAUNCHD_LABEL}.plist`),
      enable: `launchctl load -w ~/Library/LaunchAgents/${LAUNCHD_LABEL}.plist`,
      content: `<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>Label</key>
  <string>${LAUNCHD_LABEL}</string>
  <key>ProgramArguments</key>
  <array>
    <string>${xml(inp.node)}</string>
    <string>${xml(inp.bin)}</string>
    <string>agent</string>
  </array>
${env}  <key>RunAtLoad</key>
  <true/>
  <key>KeepAlive</key>
  <dict>
    <key>SuccessfulExit</key>
    <false/>
  </dict>
</dict>
</plist>
`,
    };
  }
  throw new UsageError(`bits agent install knows linux (systemd) and darwin (launchd), not ${platform}`);
}
