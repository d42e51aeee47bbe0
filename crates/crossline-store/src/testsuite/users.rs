//! Users: unique emails on the server, invitations that work once and expire, roles that change.

use super::workspace;
use crate::users::{Invitation, Role, User};
use crate::{DynStore, StoreError};
use chrono::{Duration, TimeZone, Utc};

pub(super) async fn users_sign_in_by_email_and_invitations_work_once(store: DynStore) {
    let ws = workspace(&store, "team").await;
    let other = workspace(&store, "other").await;
    let at = Utc.with_ymd_and_hms(2026, 12, 7, 9, 0, 0).unwrap();
    let user = |id: &str, workspace_id: &str, email: &str, role| User {
        id: id.into(),
        workspace_id: workspace_id.into(),
        email: email.into(),
        name: id.to_uppercase(),
        role,
        password_hash: None,
        agent_id: None,
        created_at: at,
        updated_at: at,
    };
    let invitation = |hash: &str| Invitation { token_hash: hash.into(), expires_at: at + Duration::days(7) };
    let ann = user("usr_ann", &ws.id, "ann@example.com", Role::Marketer);
    store.create_user(&ann, &invitation("inv-ann")).await.unwrap();
    store.create_user(&user("usr_bo", &ws.id, "bo@example.com", Role::Agent), &invitation("inv-bo")).await.unwrap();
    let taken =
        store.create_user(&user("usr_x", &other.id, "ann@example.com", Role::Admin), &invitation("inv-x")).await;
    assert!(matches!(taken, Err(StoreError::Conflict(_))), "one email on the whole server: {taken:?}");

    assert_eq!(store.user(&ws.id, "usr_ann").await.unwrap(), Some(ann.clone()));
    assert_eq!(store.user(&other.id, "usr_ann").await.unwrap(), None, "another workspace's user is not found");
    assert_eq!(store.user_by_id("usr_ann").await.unwrap(), Some(ann.clone()));
    assert_eq!(store.user_by_id("usr_none").await.unwrap(), None);
    assert_eq!(store.user_by_email("ann@example.com").await.unwrap().map(|user| user.id), Some("usr_ann".into()));
    let emails: Vec<String> = store.users(&ws.id).await.unwrap().into_iter().map(|user| user.email).collect();
    assert_eq!(emails, ["ann@example.com", "bo@example.com"]);
    assert!(store.users(&other.id).await.unwrap().is_empty());

    // An invitation works while valid, once.
    assert!(store.user_by_invitation("inv-ann", at + Duration::days(8)).await.unwrap().is_none(), "expired");
    assert_eq!(store.user_by_invitation("inv-ann", at).await.unwrap().map(|user| user.id), Some("usr_ann".into()));
    assert!(store.accept_invitation("inv-ann", "phc-1", at + Duration::days(8)).await.unwrap().is_none());
    let accepted = store.accept_invitation("inv-ann", "phc-1", at + Duration::hours(1)).await.unwrap().unwrap();
    assert_eq!((accepted.id.as_str(), accepted.password_hash.as_deref()), ("usr_ann", Some("phc-1")));
    assert_eq!(accepted.updated_at, at + Duration::hours(1));
    assert!(store.accept_invitation("inv-ann", "phc-2", at + Duration::hours(2)).await.unwrap().is_none(), "once");
    assert!(store.user_by_invitation("inv-ann", at).await.unwrap().is_none());
    // A new invitation (a reset) replaces the old one, and only for the user's own workspace.
    assert!(!store.set_invitation(&other.id, "usr_ann", &invitation("inv-ann-2")).await.unwrap());
    assert!(store.set_invitation(&ws.id, "usr_ann", &invitation("inv-ann-2")).await.unwrap());
    let reset = store.accept_invitation("inv-ann-2", "phc-3", at + Duration::hours(3)).await.unwrap().unwrap();
    assert_eq!(reset.password_hash.as_deref(), Some("phc-3"));

    // Role changes and removal, scoped to the workspace.
    let mut changed = reset.clone();
    changed.role = Role::Supervisor;
    changed.agent_id = Some("agt_1".into());
    changed.updated_at = at + Duration::hours(4);
    let mut foreign = changed.clone();
    foreign.workspace_id = other.id.clone();
    assert!(!store.update_user(&foreign).await.unwrap(), "another workspace cannot change it");
    assert!(store.update_user(&changed).await.unwrap());
    assert_eq!(store.user(&ws.id, "usr_ann").await.unwrap(), Some(changed));
    let session = crate::ConsoleSession {
        id_hash: "session-ann".into(),
        credential_hash: "cred".into(),
        user_id: Some("usr_ann".into()),
        created_at: Utc::now(),
        expires_at: Utc::now() + Duration::hours(1),
    };
    store.create_session(&session).await.unwrap();
    assert!(!store.delete_user(&other.id, "usr_ann").await.unwrap());
    assert!(store.delete_user(&ws.id, "usr_ann").await.unwrap());
    assert!(!store.delete_user(&ws.id, "usr_ann").await.unwrap());
    assert!(store.user_by_email("ann@example.com").await.unwrap().is_none());
    assert!(store.session("session-ann", Utc::now()).await.unwrap().is_none(), "their sessions end with them");
    // The email is free again.
    store
        .create_user(&user("usr_ann2", &other.id, "ann@example.com", Role::Viewer), &invitation("inv-3"))
        .await
        .unwrap();
}
