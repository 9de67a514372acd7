//! What the Redis driver does with each message it takes: a node's
//! command ([`Driver::command_up`]) or a request of the HTTP API
//! ([`Driver::request_up`]) while the link is up, and the bookkeeping
//! kept (and the failures answered) while it is down
//! ([`Driver::handle_down`]).

use std::sync::Arc;

use redis::aio::MultiplexedConnection;
use redis::{RedisError, Value};
use wavecast_core::backbone::{BackboneCommand, BackboneError, BackboneReply, NodeId, RequestId};

use super::scripts::{
    history, invoke_presence_add, presence, presence_remove, publish, topic, Keys, Scripts,
};
use super::{lost_or_log, send_reply, split, Driver, Link, Lost, RESPONSE_TIMEOUT};
use crate::backbone::ToHub;

impl Driver {
    /// A message while the link is down: bookkeeping is kept, requests
    /// fail at once.
    pub(super) fn handle_down(&mut self, msg: ToHub) {
        match msg {
            ToHub::Command(node, cmd) => match cmd {
                BackboneCommand::Subscribe { channel } => {
                    self.subs.entry(channel).or_default().insert(node);
                }
                BackboneCommand::Unsubscribe { channel } => {
                    self.unsubscribed(node, &channel);
                }
                BackboneCommand::Publish { request, .. } => self.reply(
                    node,
                    request,
                    BackboneReply::Published(Err(BackboneError::Unavailable)),
                ),
                BackboneCommand::History { request, .. } => self.reply(
                    node,
                    request,
                    BackboneReply::History(Err(BackboneError::Unavailable)),
                ),
                BackboneCommand::Presence { request, .. } => self.reply(
                    node,
                    request,
                    BackboneReply::Presence(Err(BackboneError::Unavailable)),
                ),
                BackboneCommand::PresenceAdd {
                    channel,
                    info,
                    announce,
                } => {
                    self.present_add(&channel, &info, announce);
                }
                BackboneCommand::PresenceRemove {
                    channel,
                    info,
                    announce,
                } => {
                    self.present_remove(&channel, &info.client);
                    self.removals.push((channel, info, announce));
                }
            },
            // Dropping the reply slot answers "unavailable" (HTTP 503).
            ToHub::Publish { .. } | ToHub::History { .. } | ToHub::Presence { .. } => {}
            ToHub::Channels(reply) => {
                let _ = reply.send(self.channel_stats());
            }
            // Nothing can reach Redis now: dropping the slot says so.
            ToHub::Flush(_)
            | ToHub::RemoteDisconnect { .. }
            | ToHub::ClusterChannels(_)
            | ToHub::ClusterStatus(_) => {}
        }
    }

    /// A message while the link is up: a node's command
    /// ([`Self::command_up`]) or a request of the HTTP API
    /// ([`Self::request_up`]).
    pub(super) async fn handle_up(&mut self, link: &mut Link, msg: ToHub) -> Result<(), Lost> {
        match msg {
            ToHub::Command(node, cmd) => self.command_up(link, node, cmd).await,
            request => {
                self.request_up(link, request);
                Ok(())
            }
        }
    }

    /// A node's command while the link is up. Subscriptions are completed
    /// before returning (see the module doc on ordering); other commands
    /// run as tasks, sent to Redis in the order they arrive.
    async fn command_up(
        &mut self,
        link: &mut Link,
        node: NodeId,
        cmd: BackboneCommand,
    ) -> Result<(), Lost> {
        match cmd {
            BackboneCommand::Subscribe { channel } => {
                let set = self.subs.entry(channel.clone()).or_default();
                let first = set.is_empty();
                set.insert(node);
                if first {
                    on_sink(link.sink.subscribe(topic(&channel))).await?;
                }
                let keys = Keys::new(&channel);
                let args = vec![self.lease.as_millis().to_string()];
                if let Err(e) =
                    invoke_presence_add(&self.scripts, &mut link.conn, &keys, &args).await
                {
                    return lost_or_log(&e);
                }
            }
            BackboneCommand::Unsubscribe { channel } => {
                if self.unsubscribed(node, &channel) {
                    on_sink(link.sink.unsubscribe(topic(&channel))).await?;
                }
            }
            BackboneCommand::Publish {
                request,
                channel,
                data,
                info,
                history,
            } => {
                self.spawn_request(
                    link,
                    node,
                    request,
                    BackboneReply::Published,
                    move |scripts, mut conn| async move {
                        publish(
                            &scripts,
                            &mut conn,
                            &channel,
                            &data,
                            info.as_deref(),
                            history,
                        )
                        .await
                    },
                );
            }
            BackboneCommand::History {
                request,
                channel,
                since,
                limit,
                reverse,
            } => {
                self.spawn_request(
                    link,
                    node,
                    request,
                    BackboneReply::History,
                    move |scripts, mut conn| async move {
                        let since = since.as_ref();
                        history(&scripts, &mut conn, &channel, since, limit, reverse).await
                    },
                );
            }
            BackboneCommand::Presence { request, channel } => {
                self.spawn_request(
                    link,
                    node,
                    request,
                    BackboneReply::Presence,
                    move |scripts, mut conn| async move {
                        presence(&scripts, &mut conn, &channel).await
                    },
                );
            }
            BackboneCommand::PresenceAdd {
                channel,
                info,
                announce,
            } => {
                let local = self.present_add(&channel, &info, announce);
                let mode = if announce {
                    "2"
                } else if local.announced {
                    "1"
                } else {
                    "0"
                };
                let args = vec![
                    self.lease.as_millis().to_string(),
                    info.client,
                    local.form.to_owned(),
                    local.value,
                    mode.to_owned(),
                ];
                self.spawn(link, move |scripts, mut conn| async move {
                    let keys = Keys::new(&channel);
                    invoke_presence_add(&scripts, &mut conn, &keys, &args)
                        .await
                        .err()
                });
            }
            BackboneCommand::PresenceRemove {
                channel,
                info,
                announce,
            } => {
                self.present_remove(&channel, &info.client);
                self.spawn(link, move |scripts, mut conn| async move {
                    presence_remove(&scripts, &mut conn, &channel, &info, announce)
                        .await
                        .err()
                });
            }
        }
        Ok(())
    }

    /// A request of the HTTP API while the link is up: each runs as a
    /// task (in arrival order), or, for a cluster-wide one, becomes a
    /// control request ([`control`]).
    fn request_up(&mut self, link: &Link, msg: ToHub) {
        match msg {
            // Taken by `command_up`.
            ToHub::Command(..) => {}
            ToHub::Publish {
                channel,
                data,
                info,
                history: policy,
                reply,
            } => self.spawn(link, move |scripts, mut conn| async move {
                let info = info.as_deref();
                match publish(&scripts, &mut conn, &channel, &data, info, policy).await {
                    Ok(pos) => {
                        let _ = reply.send(pos);
                        None
                    }
                    Err(e) => Some(e),
                }
            }),
            ToHub::History {
                channel,
                since,
                limit,
                reverse,
                reply,
            } => self.spawn(link, move |scripts, mut conn| async move {
                let since = since.as_ref();
                match history(&scripts, &mut conn, &channel, since, limit, reverse).await {
                    Ok(page) => {
                        let _ = reply.send(page);
                        None
                    }
                    Err(e) => Some(e),
                }
            }),
            ToHub::Presence { channel, reply } => {
                self.spawn(link, move |scripts, mut conn| async move {
                    match presence(&scripts, &mut conn, &channel).await {
                        Ok(list) => {
                            let _ = reply.send(list);
                            None
                        }
                        Err(e) => Some(e),
                    }
                })
            }
            ToHub::Channels(reply) => {
                let _ = reply.send(self.channel_stats());
            }
            // A PING sent after every command before it (tasks send in
            // spawn order): its answer means Redis has executed them.
            ToHub::Flush(reply) => self.spawn(link, move |_, mut conn| async move {
                match redis::cmd("PING").query_async::<Value>(&mut conn).await {
                    Ok(_) => {
                        let _ = reply.send(());
                        None
                    }
                    Err(e) => Some(e),
                }
            }),
            ToHub::RemoteDisconnect {
                instance,
                client,
                reconnect,
                reply,
            } => self.remote_disconnect(link, instance, client, reconnect, reply),
            ToHub::ClusterChannels(reply) => self.cluster_channels(link, reply),
            ToHub::ClusterStatus(reply) => self.cluster_status(link, reply),
        }
    }

    /// Runs one node's request on the link ([`Self::spawn`]) and sends the
    /// node its reply, built by `wrap` from the outcome.
    fn spawn_request<T, F, Fut>(
        &self,
        link: &Link,
        node: NodeId,
        request: RequestId,
        wrap: fn(Result<T, BackboneError>) -> BackboneReply,
        f: F,
    ) where
        T: Send + 'static,
        F: FnOnce(Arc<Scripts>, MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>> + Send + 'static,
    {
        let shards = self.shards.clone();
        self.spawn(link, move |scripts, conn| {
            let run = f(scripts, conn);
            async move {
                let (reply, err) = split(run.await);
                send_reply(&shards, node, request, wrap(reply));
                err
            }
        });
    }
}

/// A (un)subscription on the pub/sub connection, within the response
/// timeout: anything but success means the link is lost.
async fn on_sink(
    call: impl std::future::Future<Output = redis::RedisResult<()>>,
) -> Result<(), Lost> {
    match tokio::time::timeout(RESPONSE_TIMEOUT, call).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(Lost),
    }
}
