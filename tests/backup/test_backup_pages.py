"""The backups' console page: an admin takes a snapshot and drills it."""

from tests.helpers import Auth


def test_an_admin_takes_a_snapshot_and_drills_it_from_the_console(make_app, make_staff, tmp_path,
                                                                  sync_document):
    app = make_app(backup_dir=str(tmp_path / "backups"))
    client = app.test_client()
    auth = Auth(client)
    auth.login(make_staff("admin"))
    token = auth.csrf("/console/backups")
    assert client.post("/console/backups/create", data={"csrf_token": token}).status_code == 302
    assert len(list((tmp_path / "backups").glob("*.llbackup"))) == 1
    assert client.post("/console/backups/drill", data={"csrf_token": token}).status_code == 302
    page = client.get("/console/backups").get_data(as_text=True)
    assert "passed" in page and "encrypted fields decrypt" in page
    assert client.get("/healthz").get_json()["backups"]["ok"] is True
