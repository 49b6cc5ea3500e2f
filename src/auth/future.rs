use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::service::{admit, reject, renderer_or_default};
use crate::body::ResponseBody;
use crate::error::{AuthError, RenderRejection};
use crate::identity::Identity;

pin_project! {
    /// The response future of [`Auth`](super::Auth).
    pub struct ResponseFuture<AF, S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<AF, S::Future>,
        // Boxed: only an authentication that waits needs it, and a cache hit then moves
        // a small future instead of one that carries a whole request.
        pending: Option<Box<Pending<S, ReqBody>>>,
    }
}

/// What a waiting authentication keeps for when it is done.
struct Pending<S, ReqBody> {
    inner: S,
    request: Request<ReqBody>,
    renderer: Option<Arc<dyn RenderRejection>>,
}

pin_project! {
    #[project = StateProj]
    enum State<AF, F> {
        Authenticating { #[pin] future: AF },
        Calling { #[pin] future: F },
        Rejected { response: Option<Response<Bytes>> },
    }
}

impl<AF, S, ReqBody> ResponseFuture<AF, S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    pub(crate) fn authenticating(
        future: AF,
        inner: S,
        request: Request<ReqBody>,
        renderer: Option<Arc<dyn RenderRejection>>,
    ) -> Self {
        Self {
            state: State::Authenticating { future },
            pending: Some(Box::new(Pending {
                inner,
                request,
                renderer,
            })),
        }
    }

    /// Authenticated already: only the inner service's future.
    pub(crate) fn calling(future: S::Future) -> Self {
        Self {
            state: State::Calling { future },
            pending: None,
        }
    }

    pub(crate) fn rejected(response: Response<Bytes>) -> Self {
        Self {
            state: State::Rejected {
                response: Some(response),
            },
            pending: None,
        }
    }
}

impl<AF, S, ReqBody, ResBody> Future for ResponseFuture<AF, S, ReqBody>
where
    AF: Future<Output = Result<Option<Identity>, AuthError>>,
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Authenticating { future } => {
                    let outcome = ready!(future.poll(cx));
                    let Some(pending) = this.pending.take() else {
                        panic!("ResponseFuture polled after completion");
                    };
                    let Pending {
                        mut inner,
                        mut request,
                        renderer,
                    } = *pending;
                    match outcome {
                        Ok(identity) => {
                            admit(&mut request, identity, renderer);
                            let future = inner.call(request);
                            this.state.set(State::Calling { future });
                        }
                        Err(error) => {
                            let response = reject(renderer_or_default(&renderer), error, &request);
                            this.state.set(State::Rejected {
                                response: Some(response),
                            });
                        }
                    }
                }
                StateProj::Calling { future } => {
                    let response = ready!(future.poll(cx))?;
                    return Poll::Ready(Ok(response.map(ResponseBody::new)));
                }
                StateProj::Rejected { response } => {
                    let response = response
                        .take()
                        .expect("ResponseFuture polled after completion");
                    return Poll::Ready(Ok(response.map(ResponseBody::full)));
                }
            }
        }
    }
}
