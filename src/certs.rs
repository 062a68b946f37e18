//! Development certificates: a local CA and a server certificate for
//! `localhost`, generated with rcgen on first start (or `onewindow certs dev`).
//! Private keys are written with mode 0600 into `certs/`, which git ignores.

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Errors creating or reading certificate material.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// rcgen failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM file held nothing usable.
    #[error("{path}: {what}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
}

/// Where the development CA lives, beside the server certificate.
pub fn dev_ca_path(certs_dir: &Path) -> PathBuf {
    certs_dir.join("dev-ca.crt")
}

/// Generates the development CA and server certificate when `force` or when
/// either file is missing. Returns true when files were written.
pub fn ensure_dev_server_cert(
    certs_dir: &Path,
    cert: &Path,
    key: &Path,
    force: bool,
) -> Result<bool, CertError> {
    if !force && cert.exists() && key.exists() {
        return Ok(false);
    }
    mkdir(certs_dir)?;
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "onewindow development CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, &ca_key);

    let key_pair = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "onewindow development server");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = params.signed_by(&key_pair, &issuer)?;

    write_public(&dev_ca_path(certs_dir), ca_cert.pem().as_bytes())?;
    write_private(
        &certs_dir.join("dev-ca.key"),
        ca_key.serialize_pem().as_bytes(),
    )?;
    write_public(cert, server_cert.pem().as_bytes())?;
    write_private(key, key_pair.serialize_pem().as_bytes())?;
    Ok(true)
}

fn mkdir(dir: &Path) -> Result<(), CertError> {
    std::fs::create_dir_all(dir).map_err(|source| CertError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

/// Writes a public file atomically (temp file + rename).
pub fn write_public(path: &Path, data: &[u8]) -> Result<(), CertError> {
    write_atomic(path, data, 0o644)
}

/// Writes a private key atomically with mode 0600.
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), CertError> {
    write_atomic(path, data, 0o600)
}

fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), CertError> {
    let io = |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        mkdir(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(&tmp).map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Reads a PEM certificate chain.
pub fn load_certs(
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, CertError> {
    use rustls::pki_types::pem::PemObject;
    let certs: Result<Vec<_>, _> = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| CertError::Invalid {
            path: path.to_path_buf(),
            what: e.to_string(),
        })?
        .collect();
    let certs = certs.map_err(|e| CertError::Invalid {
        path: path.to_path_buf(),
        what: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(CertError::Invalid {
            path: path.to_path_buf(),
            what: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

/// Reads a PEM private key (PKCS#8, SEC1 or PKCS#1).
pub fn load_key(path: &Path) -> Result<rustls::pki_types::PrivateKeyDer<'static>, CertError> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::PrivateKeyDer::from_pem_file(path).map_err(|e| CertError::Invalid {
        path: path.to_path_buf(),
        what: format!("no usable private key: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_and_loads() {
        let dir = std::env::temp_dir().join(format!("ow-certs-{}", std::process::id()));
        let (c, k) = (dir.join("s.crt"), dir.join("s.key"));
        assert!(ensure_dev_server_cert(&dir, &c, &k, false).unwrap());
        assert!(!ensure_dev_server_cert(&dir, &c, &k, false).unwrap());
        assert_eq!(load_certs(&c).unwrap().len(), 1);
        load_key(&k).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&k).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
