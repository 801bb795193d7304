"""Remote inference over ZeroMQ: `halo-ros serve` holds the model, robots use `RemoteEngine`.

Sockets: the server binds one ROUTER (loopback by default; any other address only with CURVE
keys), each robot opens DEALER sockets, one per runtime thread (act, reason) and one for health
checks. One message = one frame = one msgpack map (`protocol.py` lists every field):

    request  {v: 1, op: hello|health|act|reason, id: n, stamp_ns: t, body: {...}}
    reply    {v: 1, op, id: n, ok: true, body: {...}, server: {instance, recv_ns, send_ns,
              handled_ms, decode_ms, queue_ms, engine_ms}}
           | {v: 1, op, id, ok: false, error: {code, message}, server: {...}}
    array    {dtype: '|u1' | '<f4', shape: [...], data: <raw bytes, C order>}
    image    array (H, W, 3) uint8 at the server's image size, or {jpeg: <bytes>}
    act      {observation: {stamp_ns, images: {camera: image}, state: array},
              reasoning: null | {version, instruction, text, plan, subtask, movement, object,
                                 observation_stamp_ns, subgoal_tokens, subgoal_grid},
              noise: array (H, A), seam: null | {mode: rtc|hard, target: (H, A), weights: (H,),
                                                max_weight}}
          -> {actions: array (H, A), timings_ms: {...}}
    reason   {observation, instruction, version, subgoal, max_tokens}
          -> reasoning + {subgoal_image, timings_ms}
    hello    {} -> {protocol, backend, model_name, model_hash, action_dim, chunk_length,
                    flow_steps, cameras, image_hw, supports_guidance_gradients,
                    control_period_ns, max_message_bytes, instance}
    health   {} -> {uptime_s, clients_last_minute, queued_*, running_*, counts}

Nothing is ever unpickled: msgpack without ext types, every size bounded, every field checked
(unknown ones refused), errors answered with a code and a message naming the field. `instance`
(random per server process) lets a client notice a restarted server behind ZeroMQ's own
reconnect and check the handshake again.
"""
