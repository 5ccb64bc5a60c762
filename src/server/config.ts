/**
 * §3.2.1.1 BITSDirectoryConfig: per-virtual-directory settings, and the
 * server-wide limits. Every URL folder under the root is a virtual directory;
 * settings are looked up by the longest matching path prefix.
 * (Implementation of loading/merging: owned by the upload-server helper.)
 */
export type NotificationType = 'none' | 'by-reference' | 'by-value';

export interface DirectoryConfig {
  /** UploadEnabled */
  uploadsEnabled: boolean;
  /** MaximumUploadSize in bytes (request entity); Infinity = no limit. */
  maxUploadSize: number;
  /** AllowOverwrites */
  allowOverwrites: boolean;
  /** BITSHostId: returned as BITS-Host-Id in the CREATE-SESSION Ack when set. */
  hostId?: string;
  /** BITSHostIdFallbackTimeout (seconds): returned as BITS-Host-Id-Fallback-Timeout when set. */
  hostIdFallbackTimeout?: number;
  /** NotificationType */
  notificationType: NotificationType;
  /** NotificationURL: required unless notificationType is 'none'. */
  notificationUrl?: string;
  /** §3.2.2.1 BITS session timeout, seconds. Default 14 days. */
  sessionTimeoutSeconds: number;
}

export interface ServerLimits {
  /** Largest FRAGMENT body accepted; larger gets 413 (§3.1.5.2.4). */
  maxFragmentBytes: number;
  /** Most sessions kept at once (§3.2.7); CREATE-SESSION beyond it gets 500. */
  maxSessions: number;
}

export interface ServerConfig {
  defaults: DirectoryConfig;
  /** Keyed by URL path prefix, e.g. `/upload` or `/replies/app`. */
  directories: Record<string, Partial<DirectoryConfig>>;
  limits: ServerLimits;
}

export const DEFAULT_DIRECTORY_CONFIG: DirectoryConfig = {
  uploadsEnabled: true,
  maxUploadSize: Number.POSITIVE_INFINITY,
  allowOverwrites: true,
  notificationType: 'none',
  sessionTimeoutSeconds: 14 * 24 * 3600,
};

export const DEFAULT_LIMITS: ServerLimits = {
  maxFragmentBytes: 64 * 1024 * 1024,
  maxSessions: 10_000,
};

/** Settings for the virtual directory that holds `urlPath` (longest prefix wins). */
export function directoryConfigFor(config: ServerConfig, urlPath: string): DirectoryConfig {
  let best: string | undefined;
  for (const prefix of Object.keys(config.directories)) {
    const p = prefix.endsWith('/') ? prefix.slice(0, -1) : prefix;
    if (urlPath === p || urlPath.startsWith(p + '/') || p === '') {
      if (best === undefined || p.length > best.length) best = prefix;
    }
  }
  return { ...config.defaults, ...(best !== undefined ? config.directories[best] : {}) };
}
