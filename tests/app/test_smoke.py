from starlette.testclient import TestClient


def test_answer_is_stored_and_replied(receiver_client: TestClient) -> None:
    response = receiver_client.post(
        "/plivo/answer", data={"CallUUID": "u1", "Direction": "inbound"}
    )
    assert response.status_code == 200
    assert response.text.startswith("<Response>")
    health = receiver_client.get("/healthz").json()
    assert health["last_event_at"] is not None
