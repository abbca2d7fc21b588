//! TLS to the data stores: which files a connection to Redis or Postgres
//! trusts and presents, read from the environment and checked at start-up
//! (part of [`crate::Config`]), and the rustls client configuration the
//! Postgres pool uses (`db.rs`). Redis takes the same files through its own
//! client (`hopper-queue`'s `connection.rs`).
//!
//! ```text
//! HOPPER_REDIS_TLS_CA_FILE    PEM CA(s) a `rediss://` server's certificate must chain to
//! HOPPER_REDIS_TLS_CERT_FILE  PEM client certificate (mutual TLS), with …_KEY_FILE
//! HOPPER_PG_TLS_CA_FILE       the same for Postgres (`sslmode=require` in DATABASE_URL, or
//! HOPPER_PG_TLS_CERT_FILE     any of these set: the connection is then TLS only)
//! ```
//!
//! Without a CA file the system's roots are trusted. rustls always checks
//! the certificate chain and the host name (what libpq calls
//! `verify-full`): a self-signed server needs its CA named.

use std::path::PathBuf;

/// The variables of Redis' TLS files: CA, client certificate, client key.
pub const REDIS_TLS_VARS: [&str; 3] = [
    "HOPPER_REDIS_TLS_CA_FILE",
    "HOPPER_REDIS_TLS_CERT_FILE",
    "HOPPER_REDIS_TLS_KEY_FILE",
];

/// The variables of Postgres' TLS files: CA, client certificate, client key.
pub const PG_TLS_VARS: [&str; 3] = [
    "HOPPER_PG_TLS_CA_FILE",
    "HOPPER_PG_TLS_CERT_FILE",
    "HOPPER_PG_TLS_KEY_FILE",
];

/// The files of one data store's TLS (all optional).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate authorities to trust instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain (mutual TLS), with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
}

/// The contents of [`TlsFiles`], read.
#[derive(Clone, Default)]
pub struct TlsPem {
    /// The CA file's bytes.
    pub ca: Option<Vec<u8>>,
    /// The client certificate and key files' bytes.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsFiles {
    /// Whether no file is named.
    pub fn is_empty(&self) -> bool {
        self.ca_file.is_none() && self.cert_file.is_none() && self.key_file.is_none()
    }

    /// The files named by the variables `vars` (CA, certificate, key:
    /// [`REDIS_TLS_VARS`], [`PG_TLS_VARS`]; empty values count as unset),
    /// and every problem with them as (variable, value, why).
    pub fn from_vars(
        vars: [&str; 3],
        get: impl Fn(&str) -> Option<String>,
    ) -> (Self, Vec<(String, String, String)>) {
        let [ca, cert, key] = vars;
        let path = |v: &str| get(v).filter(|v| !v.is_empty()).map(PathBuf::from);
        let files = Self {
            ca_file: path(ca),
            cert_file: path(cert),
            key_file: path(key),
        };
        let mut problems = Vec::new();
        for (var, file) in [
            (ca, &files.ca_file),
            (cert, &files.cert_file),
            (key, &files.key_file),
        ] {
            if let Some(f) = file
                && let Err(e) = std::fs::metadata(f)
            {
                problems.push((
                    var.to_owned(),
                    f.display().to_string(),
                    format!("cannot be read: {e}"),
                ));
            }
        }
        match (&files.cert_file, &files.key_file) {
            (Some(c), None) => problems.push((
                cert.to_owned(),
                c.display().to_string(),
                format!("a client certificate needs its key: set {key}"),
            )),
            (None, Some(k)) => problems.push((
                key.to_owned(),
                k.display().to_string(),
                format!("a client key needs its certificate: set {cert}"),
            )),
            _ => {}
        }
        (files, problems)
    }

    /// Reads the files.
    pub fn read(&self) -> Result<TlsPem, String> {
        let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        Ok(TlsPem {
            ca: self.ca_file.as_ref().map(read).transpose()?,
            client: match (&self.cert_file, &self.key_file) {
                (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
                _ => None,
            },
        })
    }

    /// A rustls client configuration trusting the CA file (or the system's
    /// roots) and presenting the client certificate, if any.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, String> {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        let pem = self.read()?;
        let mut roots = rustls::RootCertStore::empty();
        match &pem.ca {
            Some(ca) => {
                for cert in CertificateDer::pem_slice_iter(ca) {
                    let cert = cert.map_err(|e| format!("CA file: {e}"))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("CA file: a certificate is not usable: {e}"))?;
                }
                if roots.is_empty() {
                    return Err("CA file: no PEM certificate in it".into());
                }
            }
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(
            rustls::crypto::ring::default_provider().into(),
        )
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
        match pem.client {
            None => Ok(builder.with_no_client_auth()),
            Some((cert, key)) => {
                let chain = CertificateDer::pem_slice_iter(&cert)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("client certificate: {e}"))?;
                let key =
                    PrivateKeyDer::from_pem_slice(&key).map_err(|e| format!("client key: {e}"))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("client certificate and key: {e}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_without_its_key_and_an_unreadable_file_are_named() {
        let vars = [
            ("P_CA_FILE", "/nonexistent/ca.pem"),
            ("P_CERT_FILE", "/etc/hostname"),
            ("P_KEY_FILE", ""),
        ];
        let names = ["P_CA_FILE", "P_CERT_FILE", "P_KEY_FILE"];
        let get = |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        let (files, problems) = TlsFiles::from_vars(names, get);
        assert_eq!(files.key_file, None, "empty is unset");
        let named: Vec<&str> = problems.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(named, ["P_CA_FILE", "P_CERT_FILE"], "{problems:?}");
        assert!(problems[1].2.contains("P_KEY_FILE"), "{problems:?}");
    }

    #[test]
    fn nothing_set_is_empty_and_fine() {
        let (files, problems) = TlsFiles::from_vars(PG_TLS_VARS, |_| None);
        assert!(files.is_empty());
        assert!(problems.is_empty());
    }
}
